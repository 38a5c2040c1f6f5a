"""Test a trained checkpoint on a test split; write the metrics and plots DVC shows.

    python -m pipeline.evaluate ckpt_path=experiments/mnist_cnn/model.ckpt
    python -m pipeline.evaluate ckpt_path=... data=fashion_mnist    # another dataset of the same shape
    python -m pipeline.evaluate ckpt_path=... model=lenet           # check the checkpoint is that model

The checkpoint rebuilds its own model and datamodule (see ``pipeline.checkpoints``), so
the same test metric comes out as at the end of training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from pipeline.atomic import save_json
from pipeline.checkpoints import load_module
from pipeline.data.datamodule import ArrayDataModule
from pipeline.models.base import ModelConfigError
from pipeline.reports import write_confusion_pairs, write_csv
from pipeline.stage import CONFIG_PATH, instantiate_reporting_user_errors, run_reporting_user_errors

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig, record: dict[str, Any]) -> ArrayDataModule:
    """``data=...`` when given, else the datamodule the checkpoint was trained with; shapes must agree."""
    data = record["data"]
    config = cfg.data.datamodule if cfg.get("data") else data["datamodule"]
    datamodule: ArrayDataModule = instantiate_reporting_user_errors(config)
    if list(datamodule.input_shape) != list(data["input_shape"]):
        raise ModelConfigError(
            f"the checkpoint's model takes inputs of shape {data['input_shape']} (data={data['name']}) but "
            f"data={datamodule.meta['name']} has inputs of shape {list(datamodule.input_shape)}")
    if data["task"] == "classification" and datamodule.num_classes != len(data["class_names"]):
        raise ModelConfigError(
            f"the checkpoint's model predicts {len(data['class_names'])} classes (data={data['name']}) but "
            f"data={datamodule.meta['name']} has {datamodule.num_classes}")
    return datamodule


def write_plots(plots_dir: Path, module: L.LightningModule, datamodule: ArrayDataModule,
                record: dict[str, Any]) -> None:
    """Tables and figures of the test split for ``dvc plots``."""
    confusion = getattr(module, "confusion_matrix", None)
    if confusion is not None:
        write_confusion_pairs(plots_dir / "confusion.csv", confusion, datamodule.class_names)
    if record["family"] == "regression" and list(datamodule.input_shape) == [1]:
        # 1-D inputs: the fitted curve over the test points
        x, y = datamodule.splits["test"].tensors
        with torch.no_grad():
            pred = module(datamodule.on_after_batch_transfer((x, y), 0)[0]).squeeze(1)
        rows = sorted(zip(x[:, 0].tolist(), y.tolist(), pred.tolist()))
        write_csv(plots_dir / "predictions.csv", ["x", "y", "predicted"], rows)
    save_samples = getattr(module, "save_samples", None)
    if callable(save_samples):  # generative models: an image grid of samples
        save_samples(plots_dir / "samples.png")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on the test split; return (and optionally write) the test metrics."""
    L.seed_everything(cfg.seed, workers=True)
    model_config = OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else None
    module, record = load_module(cfg.ckpt_path, model_config=model_config)
    datamodule = build_datamodule(cfg, record)
    log.info("Testing %s (%s, trained on data=%s) on data=%s", cfg.ckpt_path, record["model"]["_target_"],
             record["data"]["name"], datamodule.meta["name"])

    trainer: L.Trainer = instantiate_reporting_user_errors(cfg.trainer)
    trainer.test(module, datamodule=datamodule)
    # test/* and what a family reports of its fitted model (a linear regression's fit/w, fit/b)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("test/", "fit/"))}
    if cfg.get("plots_dir"):
        write_plots(Path(cfg.plots_dir), module.cpu(), datamodule, record)
    if cfg.get("metrics_file"):
        save_json(cfg.metrics_file, dict(sorted(metrics.items())))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    metrics = run_reporting_user_errors(lambda: evaluate(cfg))
    log.info("metrics: %s", json.dumps({k: round(v, 5) for k, v in sorted(metrics.items())}))


if __name__ == "__main__":
    main()
