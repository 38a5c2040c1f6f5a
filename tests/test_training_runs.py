"""How runs behave: they learn, repeat bit for bit, resume, run on two processes, sweep, and use a GPU if any."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from pipeline.train import build_model, train
from tests.conftest import REPO_ROOT, history, make_cfg


def initial_val_loss(cfg) -> float:
    """Validation loss of the freshly initialised model (seeded exactly as train() seeds it)."""
    import lightning as L

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data.datamodule)
    model = build_model(cfg, datamodule.spec)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val/loss"]


@pytest.mark.parametrize(
    ("data", "model", "epochs"),
    [
        ("line", "linear_regression", 10),
        ("line", "polynomial_regression", 10),
        ("blobs", "logistic_regression", 10),
        ("mnist", "tiny_cnn", 5),
        ("mnist", "lenet", 5),
    ],
)
def test_a_short_run_improves_on_the_initial_model(processed, tmp_path, data, model, epochs):
    cfg = make_cfg(
        processed,
        tmp_path,
        f"data={data}",
        f"model={model}",
        f"trainer.max_epochs={epochs}",
        "optimizer.lr=0.01",
        "data.datamodule.batch_size=16",
    )
    before = initial_val_loss(cfg)
    metrics = train(cfg)
    assert metrics["val/loss"] < 0.9 * before


def test_cpu_runs_repeat_bit_for_bit(processed, tmp_path):
    def weights(run: str, seed: int, *overrides: str) -> dict[str, torch.Tensor]:
        cfg = make_cfg(
            processed, tmp_path / run, "data=mnist", "model=lenet", "trainer.max_epochs=2", f"seed={seed}", *overrides
        )
        train(cfg)
        return torch.load(tmp_path / run / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    first = weights("a", 7)
    assert torch.utils.deterministic.fill_uninitialized_memory is False  # the default: no NaN fill of new tensors
    second, other_seed = weights("b", 7), weights("c", 8)
    # torch's NaN fill of new tensors (its default under deterministic mode) changes nothing but the time taken
    filled = weights("d", 7, "fill_uninitialized_memory=true")
    assert torch.utils.deterministic.fill_uninitialized_memory is True
    assert all(torch.equal(first[k], second[k]) and torch.equal(first[k], filled[k]) for k in first)
    assert not all(torch.equal(first[k], other_seed[k]) for k in first)


def test_resuming_from_last_ckpt_continues_where_the_run_stopped(processed, tmp_path):
    """An interrupted run resumed from last.ckpt ends with the uninterrupted run's exact weights."""
    straight = make_cfg(
        processed,
        tmp_path / "straight",
        "data=mnist",
        "model=lenet",
        "trainer.max_epochs=4",
        "data.datamodule.batch_size=32",
    )
    train(straight)
    cfg = make_cfg(
        processed, tmp_path, "data=mnist", "model=lenet", "trainer.max_epochs=2", "data.datamodule.batch_size=32"
    )
    train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    resumed = make_cfg(
        processed,
        tmp_path,
        "data=mnist",
        "model=lenet",
        "trainer.max_epochs=4",
        "data.datamodule.batch_size=32",
        f"ckpt_path={last}",
    )
    train(resumed)
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 3
    expected = torch.load(tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.equal(checkpoint["state_dict"][k], v) for k, v in expected["state_dict"].items())
    # The history keeps the first run's epochs and adds only the new ones.
    assert [row["epoch"] for row in history(tmp_path / "run" / "history.csv")] == ["0", "1", "2", "3"]


def run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.train",
            *overrides,
            f"paths.log_dir={tmp_path}",
            "callbacks.progress_bar.refresh_rate=0",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_ddp_sim_trains_on_two_cpu_processes_into_one_tracked_run(processed, tmp_path, mlflow_store):
    store = mlflow_store
    result = run_train(
        tmp_path,
        f"paths.processed_dir={processed}",
        "data=spirals",
        "trainer=ddp_sim",
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={store}",
        "task_name=ddp",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log
    assert "GLOBAL_RANK: 1" in log or "world_size=2" in log.replace(" ", "") or "MEMBER: 2/2" in log
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])  # rank 0's only
    assert run.data.tags["data.name"] == "spirals" and "test/acc" in run.data.metrics
    assert len(client.list_artifacts(run.info.run_id, "checkpoints")) == 1


def test_an_unknown_config_option_fails_at_composition(processed, tmp_path):
    """Hydra's own messages (the command line prints them as they are: test_config_schema runs one)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    with pytest.raises(MissingConfigException, match=re.escape("Could not find 'optimizer/nesterov_typo'")):
        make_cfg(processed, tmp_path, "optimizer=nesterov_typo")
    with pytest.raises(ConfigCompositionException, match=re.escape("Could not override 'trainer.max_epochz'")):
        make_cfg(processed, tmp_path, "trainer.max_epochz=3")


def test_a_user_error_exits_1_without_a_traceback(processed, tmp_path):
    result = run_train(
        tmp_path, f"paths.processed_dir={processed}", "data=line", "model=lenet", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr  # Hydra's job logging writes to stdout
    assert "ClassificationModule is for classification but data=line is a regression" in output
    assert "Traceback" not in output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_gpu_training(processed, tmp_path, precision):
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=mnist",
        "model=lenet",
        "trainer=gpu",
        f"trainer.precision={precision}",
        "debug=fast_dev_run",
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))


@pytest.mark.skipif(not (torch.backends.mps.is_available()), reason="needs an Apple-silicon GPU (MPS)")
def test_mps_training(processed, tmp_path):
    cfg = make_cfg(processed, tmp_path, "data=mnist", "model=lenet", "trainer=mps", "debug=fast_dev_run")
    assert torch.isfinite(torch.tensor(train(cfg)["test/loss"]))
