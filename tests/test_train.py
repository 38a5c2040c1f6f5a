"""Training from composed configs on tiny data: every family runs, learns, and fails clearly on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from pipeline.data.processed import preprocess_dataset
from pipeline.data.sources import GeneratedTable, IdxImages
from pipeline.data.synthetic import blobs, line, spirals
from pipeline.models.base import ModelConfigError
from pipeline.train import train
from tests.conftest import REPO_ROOT, tiny_digits

SPLIT = {"val_size": 0.2, "test_size": 0.2, "seed": 0, "missing": "fail"}


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """Tiny preprocessed datasets named like the real ones, so the real configs apply unchanged."""
    root = tmp_path_factory.mktemp("data")
    for name, task, generator in (("blobs", "classification", blobs), ("line", "regression", line),
                                  ("spirals", "classification", spirals)):
        source = GeneratedTable(lambda rng, g=generator: g(rng, n_samples=200), seed=0)
        source.fetch(root / "raw" / name)
        preprocess_dataset(source, name, task, root / "raw" / name, root / "processed" / name, SPLIT)
    files = tiny_digits(root / "mirror" / "tiny", n_train=120, n_test=40, size=16, learnable=True)
    images = IdxImages(folder="tiny", files=files, class_names=[str(i) for i in range(10)], image_shape=(16, 16))
    for name in ("mnist", "fashion_mnist"):  # the same tiny digits stand in for both image datasets
        images.fetch(root / "raw" / name, mirror=str(root / "mirror"))
        preprocess_dataset(images, name, "classification", root / "raw" / name, root / "processed" / name,
                           {"val_size": 20, "seed": 0})
    return root / "processed"


def make_cfg(processed: Path, tmp_path: Path, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.processed_dir={processed}", f"paths.log_dir={tmp_path}",
                                          "callbacks.progress_bar.refresh_rate=0", *overrides],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig().set_config(cfg)
    return cfg


FAMILIES = [
    ("line", "linear_regression"), ("line", "polynomial_regression"), ("line", "mlp_regression"),
    ("blobs", "logistic_regression"), ("spirals", "mlp_classifier"),
    ("mnist", "tiny_cnn"), ("mnist", "lenet"), ("mnist", "strong_cnn"), ("mnist", "mlp_classifier"),
]


@pytest.mark.parametrize(("data", "model"), FAMILIES)
def test_every_family_runs_fast_dev_run(processed, tmp_path, data, model):
    cfg = make_cfg(processed, tmp_path, f"data={data}", f"model={model}", "debug=fast_dev_run")
    metrics = train(cfg)
    assert "test/loss" in metrics and torch.isfinite(torch.tensor(metrics["test/loss"]))


def test_mlp_learns_spirals_and_checkpoint_loads_weights_only(processed, tmp_path):
    cfg = make_cfg(processed, tmp_path, "data=spirals", "model=mlp_classifier", "trainer.max_epochs=40",
                   "optimizer.lr=0.01", "callbacks.early_stopping.patience=100")
    metrics = train(cfg)
    assert metrics["val/acc"] > 0.8
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 39 and checkpoint["hyper_parameters"]["num_classes"] == 2


def test_input_shape_mismatch_names_both_shapes(processed, tmp_path):
    cfg = make_cfg(processed, tmp_path, "data=line", "model=mlp_regression", "+model.expected_input_shape=[3]")
    with pytest.raises(ModelConfigError, match=r"expected_input_shape=\[3\] does not match the dataset's input shape \[1\]"):
        train(cfg)
    cfg = make_cfg(processed, tmp_path, "data=blobs", "model=tiny_cnn")
    with pytest.raises(ModelConfigError, match=r"cannot take the dataset's inputs of shape \[2\]"):
        train(cfg)


def test_model_family_must_match_the_task(processed, tmp_path):
    cfg = make_cfg(processed, tmp_path, "data=line", "model=tiny_cnn")
    with pytest.raises(ModelConfigError, match="ClassificationModule is for classification but data=line is a regression"):
        train(cfg)


def test_nan_loss_stops_with_the_step_number(processed, tmp_path):
    cfg = make_cfg(processed, tmp_path, "data=line", "model=linear_regression", "optimizer=sgd",
                   "optimizer.lr=1e30", "optimizer.momentum=0", "trainer.max_epochs=5")
    with pytest.raises(FloatingPointError, match=r"training loss is (nan|inf) at step \d+"):
        train(cfg)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_and_instantiates(processed, tmp_path, experiment):
    from pipeline.train import build_model
    from hydra.utils import instantiate

    cfg = make_cfg(processed, tmp_path, f"experiment={experiment}")
    datamodule = instantiate(cfg.data.datamodule)
    assert build_model(cfg, datamodule).task == datamodule.task
    assert cfg.task_name == experiment
