"""Training from composed configs on tiny data: every family runs, learns, and fails clearly on bad input."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import ModelConfigError
from pipeline.train import train
from tests.conftest import REPO_ROOT, make_cfg

FAMILIES = [
    ("line", "linear_regression"),
    ("line", "polynomial_regression"),
    ("line", "mlp_regression"),
    ("blobs", "logistic_regression"),
    ("spirals", "mlp_classifier"),
    ("mnist", "tiny_cnn"),
    ("mnist", "lenet"),
    ("mnist", "strong_cnn"),
    ("mnist", "mlp_classifier"),
]


@pytest.mark.parametrize(("data", "model"), FAMILIES)
def test_every_family_runs_fast_dev_run(processed, tmp_path, data, model):
    cfg = make_cfg(processed, tmp_path, f"data={data}", f"model={model}", "debug=fast_dev_run")
    metrics = train(cfg)
    assert "test/loss" in metrics and torch.isfinite(torch.tensor(metrics["test/loss"]))


def test_mlp_learns_spirals_and_checkpoint_loads_weights_only(processed, tmp_path):
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=spirals",
        "model=mlp_classifier",
        "trainer.max_epochs=40",
        "optimizer.lr=0.01",
        "callbacks.early_stopping.patience=100",
    )
    metrics = train(cfg)
    assert metrics["val/acc"] > 0.8
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 39 and checkpoint["hyper_parameters"]["num_classes"] == 2


def test_input_shape_mismatch_names_both_shapes(processed, tmp_path):
    cfg = make_cfg(processed, tmp_path, "data=blobs", "model=tiny_cnn")
    with pytest.raises(ModelConfigError, match=r"cannot take the dataset's inputs of shape \[2\]"):
        train(cfg)


def test_model_family_must_match_the_task(processed, tmp_path):
    cfg = make_cfg(processed, tmp_path, "data=line", "model=tiny_cnn")
    with pytest.raises(
        ModelConfigError, match="ClassificationModule is for classification but data=line is a regression"
    ):
        train(cfg)


def test_nan_loss_stops_with_the_step_number(processed, tmp_path):
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=line",
        "model=linear_regression",
        "optimizer=sgd",
        "optimizer.lr=1e30",
        "optimizer.momentum=0",
        "trainer.max_epochs=5",
    )
    with pytest.raises(FloatingPointError, match=r"training loss is (nan|inf) at step \d+"):
        train(cfg)


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml") if p.stem[0] != "_")
)
def test_every_experiment_preset_composes_and_instantiates(processed, tmp_path, experiment):
    """Each preset passes the schema, and its datamodule, model, callbacks and trainer all build."""
    from hydra.utils import instantiate

    from pipeline.config_schema import validate
    from pipeline.train import build_model, instantiate_callbacks

    cfg = make_cfg(processed, tmp_path, f"experiment={experiment}")
    validate(cfg)
    datamodule = instantiate(cfg.data.datamodule)
    model = build_model(cfg, datamodule.spec)
    callbacks = instantiate_callbacks(cfg, datamodule.spec, model)
    instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert cfg.task_name == experiment  # runs of different presets never share a log folder
    figures = {type(c).__name__ for c in callbacks if type(c).__module__ == "pipeline.callbacks.figures"}
    assert figures == FIGURES_OF.get(experiment, figures), figures


# The figures a preset's training keeps (the rest cannot be drawn for its model and data, and are left out)
FIGURES_OF = {
    "spirals_mlp": {"LossCurves", "DecisionBoundary", "ConfusionMatrix"},
    "line_regression": {"LossCurves", "FittedCurve"},
    "auto_mpg_mlp": {"LossCurves"},
    "mnist_cnn": {"LossCurves", "ConfusionMatrix", "MisclassifiedExamples"},
    "mnist_gan": {"LossCurves", "GANProgress"},
    "addition_rnn": {"LossCurves", "AnsweredQuestions"},
    "cartpole_dqn": {"LossCurves", "RewardCurve"},
}
