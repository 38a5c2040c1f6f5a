"""Evaluation of checkpoints: the same test metric as training, DVC's files, clear errors for the wrong checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from pipeline.errors import ModelConfigError
from pipeline.evaluate import evaluate
from pipeline.models.checkpoints import load_module
from pipeline.train import train
from tests.conftest import REPO_ROOT, make_cfg

# module-scoped fixtures: the whole module runs in one test process (make test's --dist loadgroup)
pytestmark = pytest.mark.xdist_group("evaluate")


def make_eval_cfg(processed: Path, tmp_path: Path, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[f"paths.processed_dir={processed}", f"paths.log_dir={tmp_path}", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "eval")
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture(scope="module")
def trained(processed, tmp_path_factory) -> dict[str, tuple[Path, dict[str, float]]]:
    """One short training run per family: its exported checkpoint and its metrics."""
    runs = {}
    for name, overrides in {
        "line": ("experiment=line_regression", "trainer.max_epochs=30"),
        "spirals": ("data=spirals", "model=mlp_classifier", "trainer.max_epochs=5"),
        "digits": ("data=mnist", "model=tiny_cnn", "trainer.max_epochs=2"),
    }.items():
        tmp = tmp_path_factory.mktemp(name)
        cfg = make_cfg(
            processed, tmp, *overrides, f"model_file={tmp / 'model.ckpt'}", f"metrics_file={tmp / 'train_metrics.json'}"
        )
        runs[name] = (tmp / "model.ckpt", train(cfg))
    return runs


@pytest.mark.parametrize("name", ["line", "spirals", "digits"])
def test_evaluate_reproduces_the_test_metrics_of_training(processed, tmp_path, trained, name):
    ckpt, train_metrics = trained[name]
    metrics_file = tmp_path / "metrics.json"
    metrics = evaluate(make_eval_cfg(processed, tmp_path, f"ckpt_path={ckpt}", f"metrics_file={metrics_file}"))
    assert metrics["test/loss"] == pytest.approx(train_metrics["test/loss"], rel=1e-6)
    assert json.loads(metrics_file.read_text()) == pytest.approx(metrics)


def test_line_regression_reports_the_fitted_line(processed, tmp_path, trained):
    ckpt, train_metrics = trained["line"]
    # tests/test_train.py draws the line with synthetic.line's defaults: y = 2x - 1 + noise.
    assert train_metrics["fit/w"] == pytest.approx(2.0, abs=0.2)
    assert train_metrics["fit/b"] == pytest.approx(-1.0, abs=0.2)
    metrics = evaluate(make_eval_cfg(processed, tmp_path, f"ckpt_path={ckpt}"))
    assert metrics["fit/w"] == pytest.approx(train_metrics["fit/w"], rel=1e-6)
    with open(tmp_path / "eval" / "plots" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and [float(r["x"]) for r in rows] == sorted(float(r["x"]) for r in rows)
    for row in rows:  # the plotted curve is the fitted line
        assert float(row["predicted"]) == pytest.approx(metrics["fit/w"] * float(row["x"]) + metrics["fit/b"], abs=1e-4)


def test_classifier_evaluation_writes_one_confusion_pair_per_test_example(processed, tmp_path, trained):
    ckpt, _ = trained["digits"]
    metrics = evaluate(make_eval_cfg(processed, tmp_path, f"ckpt_path={ckpt}"))
    with open(tmp_path / "eval" / "plots" / "confusion.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40  # the tiny test split
    accuracy = sum(r["actual"] == r["predicted"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["test/acc"])


def test_checkpoint_of_another_family_is_refused_by_name(processed, tmp_path, trained):
    ckpt, _ = trained["line"]
    cfg = make_eval_cfg(processed, tmp_path, f"ckpt_path={ckpt}", "model=lenet")
    with pytest.raises(
        ModelConfigError,
        match=r"holds a regression model .*RegressionModule.*data=line.*"
        r"but a classification model was asked for",
    ):
        evaluate(cfg)
    cfg = make_cfg(processed, tmp_path, "data=mnist", "model=lenet", f"ckpt_path={ckpt}")
    with pytest.raises(ModelConfigError, match="holds a regression model"):
        train(cfg)  # resuming from it fails before any training


def test_checkpoint_of_another_architecture_names_the_mismatch(processed, tmp_path, trained):
    ckpt, _ = trained["digits"]
    cfg = make_eval_cfg(processed, tmp_path, f"ckpt_path={ckpt}", "model=lenet")
    with pytest.raises(ModelConfigError, match=r"tiny_cnn|does not fit the model config"):
        evaluate(cfg)


def test_evaluating_on_data_of_another_shape_names_both(processed, tmp_path, trained):
    ckpt, _ = trained["spirals"]
    cfg = make_eval_cfg(processed, tmp_path, f"ckpt_path={ckpt}", "data=mnist")
    with pytest.raises(ModelConfigError, match=r"inputs of shape \[2\] \(data=spirals\).*\[1, 16, 16\]"):
        evaluate(cfg)


def test_a_file_that_is_not_a_pipeline_checkpoint_is_refused(processed, tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ModelConfigError, match=r"was not written by pipeline.train"):
        load_module(foreign)
    with pytest.raises(ModelConfigError, match="does not exist"):
        load_module(tmp_path / "missing.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelConfigError, match="cannot be read as a weights-only torch checkpoint"):
        load_module(tmp_path / "garbage.ckpt")


def test_rebuilt_model_predicts_like_the_trained_one(trained):
    ckpt, _ = trained["spirals"]
    module, record = load_module(ckpt, family="classification")
    assert record["data"]["name"] == "spirals" and record["family"] == "classification"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ModelConfigError, match="cannot be trained"):
        module.configure_optimizers()
