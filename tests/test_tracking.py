"""logger=mlflow: a training run lands in a real MLflow store with its tags, params, metrics and config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.checkpoints import load_module
from pipeline.tracking import git_state, run_tags
from pipeline.train import train
from tests.test_train import make_cfg, processed  # noqa: F401  (the tiny-datasets fixture)


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_run_records_tags_params_metrics_and_config(processed, tmp_path, store, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DVC_STAGE", "train@spirals_mlp")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = make_cfg(processed, tmp_path, "experiment=spirals_mlp", "logger=mlflow", f"logger.mlflow.tracking_uri={store}",
                   "trainer.max_epochs=2", "optimizer.lr=0.02")
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
    config = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text())
    assert config["optimizer"]["lr"] == 0.02 and "hydra" not in config

    (checkpoint,) = client.list_artifacts(run.info.run_id, "checkpoints")  # the best one
    module, record = load_module(client.download_artifacts(run.info.run_id, checkpoint.path, str(tmp_path)))
    assert record["family"] == "classification" and module.family == "classification"
    summary = Path(client.download_artifacts(run.info.run_id, "model_summary.txt", str(tmp_path))).read_text()
    assert "Trainable params" in summary and "net" in summary


def test_the_store_follows_mlflow_tracking_uri(processed, tmp_path, monkeypatch):  # noqa: F811
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = make_cfg(processed, tmp_path, "logger=mlflow")
    assert cfg.logger.mlflow.tracking_uri == uri
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert make_cfg(processed, tmp_path, "logger=mlflow").logger.mlflow.tracking_uri == "sqlite:///./mlflow.db"


def test_tags_outside_git_and_dvc(processed, tmp_path, monkeypatch):  # noqa: F811
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
