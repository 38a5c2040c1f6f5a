"""logger=mlflow: a training run lands in a real MLflow store with its tags, params, metrics and config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from pipeline.models.checkpoints import load_module
from pipeline.tracking.provenance import git_state
from pipeline.tracking.provenance import source_tags as run_tags
from pipeline.tracking.run import default_artifact_location
from pipeline.train import train
from tests.conftest import make_cfg, only_run


def test_a_run_records_tags_params_metrics_and_config(processed, tmp_path, mlflow_store, monkeypatch):
    store = mlflow_store  # MLFLOW_TRACKING_URI, which the default logger (mlflow) reads
    monkeypatch.setenv("DVC_STAGE", "train@spirals_mlp")
    cfg = make_cfg(
        processed,
        tmp_path,
        "logger=mlflow",
        "experiment=spirals_mlp",
        "trainer.max_epochs=2",
        "optimizer.lr=0.02",
        "trainer.log_every_n_steps=1",
    )
    metrics = train(cfg)

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("spirals_mlp")
    (run,) = client.search_runs([experiment.experiment_id])
    tags = run.data.tags
    assert tags["dvc.stage"] == "train@spirals_mlp" and tags["data.name"] == "spirals"
    assert tags["git.commit"] == git_state(cfg.paths.root_dir)["git.commit"]
    assert any(key.startswith("data.sha256.") for key in tags)
    assert run.data.params["optimizer/lr"] == "0.02" and run.data.params["trainer/max_epochs"] == "2"
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    history = client.get_metric_history(run.info.run_id, "val/loss")
    assert len(history) == 2  # one value per epoch
    steps = client.get_metric_history(run.info.run_id, "train/loss_step")  # every log_every_n_steps steps
    assert len(steps) >= 2 and len({m.step for m in steps}) == len(steps)
    config = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text())
    assert config["optimizer"]["lr"] == 0.02 and "hydra" not in config

    (checkpoint,) = client.list_artifacts(run.info.run_id, "checkpoints")  # the best one
    module, record = load_module(client.download_artifacts(run.info.run_id, checkpoint.path, str(tmp_path)))
    assert record["family"] == "classification" and module.family == "classification"
    summary = Path(client.download_artifacts(run.info.run_id, "model_summary.txt", str(tmp_path))).read_text()
    assert "Trainable params" in summary and "net" in summary


def test_the_logged_model_takes_raw_features_and_returns_probabilities(processed, tmp_path, mlflow_store):
    train(make_cfg(processed, tmp_path, "logger=mlflow", "experiment=spirals_mlp", "trainer.max_epochs=2"))
    run = only_run(mlflow_store, "spirals_mlp")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 2)

    x = np.load(processed / "spirals" / "test_x.npy")[:8].astype(np.float32)  # raw, unnormalised features
    probability = model.predict(x)[:, 0]
    checkpoint = next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))  # the best (and only best) one
    module, record = load_module(checkpoint)
    mean, std = (torch.tensor(record["data"]["normalization"][k]) for k in ("mean", "std"))
    with torch.no_grad():
        expected = torch.sigmoid(module((torch.from_numpy(x) - mean) / std)).squeeze(1).numpy()
    np.testing.assert_allclose(probability, expected, rtol=1e-5, atol=1e-6)


def test_an_image_classifier_takes_pixel_values(processed, tmp_path, mlflow_store):
    train(
        make_cfg(
            processed,
            tmp_path,
            "logger=mlflow",
            "data=mnist",
            "model=tiny_cnn",
            "trainer.max_epochs=1",
            "task_name=digits",
        )
    )
    model = mlflow.pytorch.load_model(f"runs:/{only_run(mlflow_store, 'digits').info.run_id}/model")
    pixels = torch.from_numpy(np.load(processed / "mnist" / "test_x.npy")[:4]).float()  # uint8 values 0-255
    probabilities = model(pixels)
    assert probabilities.shape == (4, 10)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(4))


def test_artifacts_of_a_local_store_land_beside_its_database(tmp_path):
    assert default_artifact_location(f"sqlite:///{tmp_path}/a/mlflow.db", "exp") == (tmp_path / "a/mlruns/exp").as_uri()
    assert default_artifact_location("http://127.0.0.1:5000", "exp") is None


def test_the_store_follows_mlflow_tracking_uri(processed, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = make_cfg(processed, tmp_path, "logger=mlflow")
    assert cfg.logger.mlflow.tracking_uri == uri
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert make_cfg(processed, tmp_path, "logger=mlflow").logger.mlflow.tracking_uri == "sqlite:///./mlflow.db"
    monkeypatch.setenv("DVC_ROOT", "/project")  # under DVC (also in `dvc exp run --temp` copies): the project's
    assert make_cfg(processed, tmp_path, "logger=mlflow").logger.mlflow.tracking_uri == "sqlite:////project/mlflow.db"


def test_tags_outside_git_and_dvc(processed, tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert git_state(tmp_path) == {"git.commit": "unknown", "git.dirty": "unknown"}
    cfg = make_cfg(processed, tmp_path, "paths.root_dir=" + str(tmp_path))
    tags = run_tags(cfg, {"name": "x", "sources": {"a.csv": {"sha256": "ab" * 32}}}, experiment=None)
    assert tags["pipeline.experiment"] == "none" and tags["data.sha256.a.csv"] == "ab" * 32
    assert not any(key.startswith("dvc.") for key in tags)


def test_git_state_sees_a_dirty_tree(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "x")
    assert git_state(tmp_path)["git.dirty"] == "false"
    (tmp_path / "f.txt").write_text("b")
    state = git_state(tmp_path)
    assert state["git.dirty"] == "true" and len(state["git.commit"]) == 40


@pytest.mark.parametrize("model_format", ["pt2", "pickle"])
def test_the_model_format_decides_what_loads_back(processed, tmp_path, mlflow_store, model_format, monkeypatch):
    import mlflow.models.utils

    from pipeline.tracking.model import Predictor

    checks = []  # MLflow's serving check at logging: skipped for pt2 (torch.export ran the example), run for pickle
    check = mlflow.models.utils._validate_serving_input
    monkeypatch.setattr(mlflow.models.utils, "_validate_serving_input", lambda **k: checks.append(k) or check(**k))
    train(
        make_cfg(
            processed,
            tmp_path,
            "logger=mlflow",
            "experiment=spirals_mlp",
            "trainer.max_epochs=1",
            f"logger.mlflow.model_format={model_format}",
        )
    )
    uri = f"runs:/{only_run(mlflow_store, 'spirals_mlp').info.run_id}/model"
    model = mlflow.pytorch.load_model(uri)
    assert isinstance(model, Predictor) == (model_format == "pickle")  # pickle: the module itself, trainable
    x = np.load(processed / "spirals" / "test_x.npy")[:4].astype(np.float32)
    np.testing.assert_allclose(
        model(torch.from_numpy(x)).detach().numpy()[:, 0],
        mlflow.pyfunc.load_model(uri).predict(x)[:, 0],
        rtol=1e-5,
        atol=1e-6,
    )
    assert len(checks) == (model_format == "pickle")
    # the logged serving example serves either way: the check, run here once instead of in every run
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    served = check(uri, (local / "serving_input_example.json").read_text())
    example = mlflow.models.Model.load(local).load_input_example(local)
    np.testing.assert_allclose(served, mlflow.pyfunc.load_model(uri).predict(example), rtol=1e-6)


def test_an_unknown_model_format_is_refused_by_name(tmp_path):
    from pipeline.tracking.logger import PipelineMLFlowLogger

    with pytest.raises(ValueError, match=r"logger.mlflow.model_format='onnx': expected one of pt2, pickle"):
        PipelineMLFlowLogger(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", experiment_name="x", model_format="onnx")


def test_only_the_run_owner_the_sweep_callback_the_registry_and_the_model_loader_import_mlflow():
    import ast

    from tests.conftest import REPO_ROOT

    importers = set()
    for path in (REPO_ROOT / "src" / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name == "mlflow" or name.startswith("mlflow.") for name in names):
                importers.add(path.relative_to(REPO_ROOT / "src").as_posix())
    assert importers == {
        "pipeline/tracking/run.py",  # runs
        "pipeline/tracking/sweep.py",  # sweeps' parent runs
        "pipeline/tracking/registry.py",  # model versions and aliases
        "pipeline/tracking/loading.py",  # a logged model, loaded back
        "pipeline/tracking/text_model.py",  # a sequence model's python-function model
    }


def test_a_run_names_its_data_splits_and_samples_system_metrics(processed, tmp_path, mlflow_store):
    """Three dataset inputs whose digests follow from the split files' bytes (recomputed here), and MLflow's
    system metrics in the same run."""
    import hashlib
    import json

    cfg = make_cfg(
        processed,
        tmp_path,
        "logger=mlflow",
        "experiment=spirals_mlp",
        "trainer.max_epochs=3",
        "logger.mlflow.pytorch_model=false",
        "logger.mlflow.system_metrics_interval=0.2",
        "callbacks=no_figures",
    )
    train(cfg)
    run = only_run(mlflow_store, "spirals_mlp")
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"spirals-train", "spirals-val", "spirals-test"}
    for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        files = [processed / "spirals" / f"{split}_{part}.npy" for part in ("x", "y")]
        checksums = "".join(hashlib.md5(f.read_bytes()).hexdigest() for f in files)
        recorded = inputs[f"spirals-{split}"]
        assert recorded.dataset.digest == hashlib.md5(checksums.encode()).hexdigest()
        assert json.loads(recorded.dataset.source)["uri"].endswith(f"spirals/{split}_x.npy")
        assert [(t.key, t.value) for t in recorded.tags] == [("mlflow.data.context", context)]
    cpu = MlflowClient(mlflow_store).get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert cpu and all(0 <= m.value <= 100 * 64 for m in cpu)
    assert "system/system_memory_usage_megabytes" in run.data.metrics
