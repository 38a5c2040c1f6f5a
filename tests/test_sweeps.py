"""Hydra multiruns as MLflow parent/child runs: grid sweeps, seeds, Optuna, parallel launchers, run folders.

Each sweep runs as the user runs it (``python -m pipeline.train -m ...`` in a subprocess) on
the tiny datasets of tests/test_train.py, into the per-test SQLite store of conftest.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from pipeline.tracking.run import PARENT_TAG
from pipeline.tracking.sweep import seed_groups, shared_overrides
from tests.conftest import REPO_ROOT, train_command

pytestmark = pytest.mark.slow

# What the sweep tests read is the runs' params, metrics and tags: no model upload, no figures.
FAST = [
    "experiment=spirals_mlp",
    "trainer.max_epochs=2",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks=no_figures",
    "logger.mlflow.pytorch_model=false",
]


def sweep(processed: Path, tmp_path: Path, *overrides: str, multirun: bool = True) -> str:
    command = train_command(processed, tmp_path / "logs", *overrides, multirun=multirun)
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def runs_of(store: str, experiment: str = "spirals_mlp") -> tuple[object, list]:
    """(parent run, its child runs sorted by job number) of the one sweep in the store."""
    client = MlflowClient(store)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("pipeline.sweep") == "parent"]
    children = [run for run in runs if run.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert len(children) == len(runs) - 1, "every run of the sweep is a child of its parent run"
    return parent, sorted(children, key=lambda run: int(run.data.tags["sweep.job"]))


def artifact_table(store: str, run_id: str, path: str, tmp_path: Path) -> list[dict[str, str]]:
    local = MlflowClient(store).download_artifacts(run_id, path, str(tmp_path))
    return list(csv.DictReader(io.StringIO(Path(local).read_text())))


def test_a_2x2_grid_is_one_parent_with_four_children_and_a_summary(processed, tmp_path, mlflow_store):
    sweep(processed, tmp_path, *FAST, "optimizer=adam,sgd", "optimizer.lr=0.01,0.05")
    parent, children = runs_of(mlflow_store)
    assert len(children) == 4 and parent.info.status == "FINISHED"
    assert [run.info.run_name for run in children] == [
        "#0 optimizer=adam optimizer.lr=0.01",
        "#1 optimizer=adam optimizer.lr=0.05",
        "#2 optimizer=sgd optimizer.lr=0.01",
        "#3 optimizer=sgd optimizer.lr=0.05",
    ]
    assert {run.data.params["optimizer/_target_"] for run in children} == {"torch.optim.Adam", "torch.optim.SGD"}
    assert all("test/acc" in run.data.metrics for run in children)

    # spirals_mlp optimises val/acc, higher is better
    best = max(children, key=lambda run: run.data.metrics["val/acc"])
    assert parent.data.metrics["best/val/acc"] == pytest.approx(best.data.metrics["val/acc"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    best_overrides = dict(item.split("=", 1) for item in json.loads(best.data.tags["sweep.overrides"]))
    assert parent.data.params["best/optimizer"] == best_overrides["optimizer"]
    assert parent.data.params["best/optimizer.lr"] == best_overrides["optimizer.lr"]
    assert "optimizer=adam,sgd" in parent.data.tags["sweep.overrides"]

    table = artifact_table(mlflow_store, parent.info.run_id, "children.csv", tmp_path)
    assert [row["run_id"] for row in table] == [run.info.run_id for run in children]
    assert {(row["optimizer"], row["optimizer.lr"]) for row in table} == {
        ("adam", "0.01"),
        ("adam", "0.05"),
        ("sgd", "0.01"),
        ("sgd", "0.05"),
    }
    assert float(table[1]["val/acc"]) == pytest.approx(children[1].data.metrics["val/acc"])
    # the four jobs wrote four folders of one sweep folder
    (sweep_dir,) = (tmp_path / "logs" / "spirals_mlp" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]


def test_a_sweep_whose_parent_run_cannot_be_opened_stops_before_its_first_job(processed, tmp_path):
    """Hydra turns a callback's error into a warning and runs the jobs anyway, as runs of no sweep: the sweep
    stops instead, saying which store failed."""
    (tmp_path / "not_a_folder").write_text("")
    store = f"sqlite:///{tmp_path / 'not_a_folder' / 'mlflow.db'}"
    command = train_command(processed, tmp_path / "logs", *FAST, "optimizer.lr=0.01,0.05", multirun=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": store}
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"the sweep's MLflow parent run could not be opened in {store}" in output
    assert "Launching" not in output and not list((tmp_path / "logs").rglob("*.ckpt")), output


def test_seeds_of_one_config_are_aggregated_on_the_parent_and_the_best_is_registered_once(
    processed, tmp_path, mlflow_store
):
    with_models = [o for o in FAST if not o.startswith("logger.mlflow.pytorch_model")]
    sweep(processed, tmp_path, *with_models, "seed=1,2,3", "logger.mlflow.registered_model_name=spirals")
    parent, children = runs_of(mlflow_store)
    client = MlflowClient(mlflow_store)
    (version,) = client.search_model_versions("name = 'spirals'")  # once, after the sweep
    assert version.run_id == parent.data.tags["best_run_id"]
    assert client.get_model_version_by_alias("spirals", "champion").version == version.version
    accuracies = [run.data.metrics["test/acc"] for run in children]
    assert len(set(accuracies)) > 1, "different seeds give different runs"
    assert parent.data.metrics["test/acc/mean"] == pytest.approx(statistics.fmean(accuracies))
    assert parent.data.metrics["test/acc/std"] == pytest.approx(statistics.stdev(accuracies))
    rows = artifact_table(mlflow_store, parent.info.run_id, "seeds.csv", tmp_path)
    row = next(r for r in rows if r["metric"] == "test/acc")
    assert row["seeds"] == "3" and float(row["mean"]) == pytest.approx(statistics.fmean(accuracies))


def test_optuna_search_returns_the_metric_and_the_parent_reports_its_best(processed, tmp_path, mlflow_store):
    sweep(
        processed,
        tmp_path,
        "hparams_search=spirals_optuna",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",  # not the project's optuna.db
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=2",
        "callbacks.progress_bar.refresh_rate=0",
        "callbacks=no_figures",
        "logger.mlflow.pytorch_model=false",
        multirun=False,
    )
    parent, children = runs_of(mlflow_store)
    assert len(children) == 3
    assert len({run.data.params["optimizer/lr"] for run in children}) == 3, "each trial samples its own lr"
    (sweep_dir,) = (tmp_path / "logs" / "spirals_mlp" / "multiruns").iterdir()
    study = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    # what each job returned (val/acc) is what Optuna maximised: its best is the parent's best
    assert study["best_value"] == pytest.approx(max(run.data.metrics["val/acc"] for run in children))
    assert parent.data.metrics["best/val/acc"] == pytest.approx(study["best_value"])
    best = MlflowClient(mlflow_store).get_run(parent.data.tags["best_run_id"])
    assert float(best.data.params["optimizer/lr"]) == pytest.approx(study["best_params"]["optimizer.lr"])


@pytest.mark.parametrize("launcher", ["parallel", "submitit_local"])
def test_sweep_jobs_in_their_own_processes_are_still_children(processed, tmp_path, mlflow_store, launcher):
    sweep(processed, tmp_path, *FAST, "seed=1,2", f"launcher={launcher}")
    parent, children = runs_of(mlflow_store)
    assert len(children) == 2 and parent.data.tags["sweep.launcher"].endswith(
        "JoblibLauncher" if launcher == "parallel" else "LocalLauncher"
    )
    assert {run.data.params["threads"] for run in children} == {"1"}
    assert "test/acc/mean" in parent.data.metrics


def test_runs_started_at_the_same_moment_get_their_own_folders(processed, tmp_path):
    command = train_command(processed, tmp_path / "logs", "logger=csv", "debug=fast_dev_run", "test=false")
    procs = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert len(list((tmp_path / "logs" / "train" / "runs").iterdir())) == 2


@pytest.mark.parametrize("search", sorted(p.stem for p in (REPO_ROOT / "conf" / "hparams_search").glob("*.yaml")))
@pytest.mark.parametrize("mode", ["min", "max"])
def test_search_configs_optimise_in_the_direction_of_their_metric(search, mode):
    """The Optuna direction follows optimized_mode (said once, in the experiment), whichever it is."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"hparams_search={search}", f"optimized_mode={mode}"], return_hydra_config=True
        )
    assert cfg.hydra.sweeper.direction == {"max": "maximize", "min": "minimize"}[mode]


def test_shared_overrides_and_seed_groups():
    assert shared_overrides(["experiment=a", "optimizer=adam,sgd", "seed=range(3)", "x=[1,2]"]) == [
        "experiment=a",
        "x=[1,2]",
    ]
    jobs = [{"overrides": {"lr": lr, "seed": seed}} for lr in ("0.1", "0.2") for seed in ("1", "2")]
    groups = seed_groups(jobs, ["lr", "seed"])
    assert sorted(groups) == [(("lr", "0.1"),), (("lr", "0.2"),)] and all(len(g) == 2 for g in groups.values())
