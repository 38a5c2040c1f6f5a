"""Test a trained checkpoint on a test split; write the metrics and plots DVC shows.

    python -m pipeline.evaluate ckpt_path=experiments/mnist_cnn/model.ckpt
    python -m pipeline.evaluate ckpt_path=... data=fashion_mnist    # another dataset of the same shape
    python -m pipeline.evaluate ckpt_path=... model=lenet           # check the checkpoint is that model

The checkpoint rebuilds its own model and datamodule (see ``pipeline.models.checkpoints``), so
the same test metric comes out as at the end of training.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from pipeline.atomic import save_csv, save_json
from pipeline.cli import hydra_app, report_user_errors
from pipeline.config_schema import validate
from pipeline.data.datamodule import ArrayDataModule
from pipeline.data.spec import DatasetSpec
from pipeline.errors import ModelConfigError, build
from pipeline.models.checkpoints import load_module

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on the test split; return (and optionally write) the test metrics."""
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    model_config = cast(dict[str, Any], OmegaConf.to_container(cfg.model, resolve=True)) if cfg.get("model") else None
    module, record = load_module(cfg.ckpt_path, model_config=model_config)
    trained_on = DatasetSpec.from_record(record["data"])
    datamodule = build_datamodule(cfg, record, trained_on)
    log.info(
        "Testing %s (%s, trained on data=%s) on data=%s",
        cfg.ckpt_path,
        record["model"]["_target_"],
        trained_on.name,
        datamodule.spec.name,
    )

    trainer: L.Trainer = build(cfg.trainer)
    trainer.test(module, datamodule=datamodule)
    # test/* and what a family reports of its fitted model (a linear regression's fit/w, fit/b)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("test/", "fit/"))}
    if cfg.get("plots_dir"):
        write_plots(Path(cfg.plots_dir), module.cpu(), datamodule, record["family"])
    if cfg.get("metrics_file"):
        save_json(cfg.metrics_file, dict(sorted(metrics.items())))
    return metrics


def build_datamodule(cfg: DictConfig, record: dict[str, Any], trained_on: DatasetSpec) -> ArrayDataModule:
    """``data=...`` when given, else the datamodule the checkpoint was trained with; shapes must agree."""
    config = cfg.data.datamodule if cfg.get("data") else record["data"]["datamodule"]
    datamodule: ArrayDataModule = build(config)
    spec = datamodule.spec
    if spec.input_shape != trained_on.input_shape:
        raise ModelConfigError(
            f"the checkpoint's model takes inputs of shape {list(trained_on.input_shape)} (data={trained_on.name}) "
            f"but data={spec.name} has inputs of shape {list(spec.input_shape)}"
        )
    if spec.task != trained_on.task:
        raise ModelConfigError(
            f"the checkpoint's model is for {trained_on.task} (data={trained_on.name}) but data={spec.name} is a "
            f"{spec.task} dataset"
        )
    if trained_on.task in ("classification", "control") and spec.num_classes != trained_on.num_classes:
        raise ModelConfigError(
            f"the checkpoint's model predicts {trained_on.num_classes} classes (data={trained_on.name}) but "
            f"data={spec.name} has {spec.num_classes}"
        )
    return datamodule


def write_plots(plots_dir: Path, module: L.LightningModule, datamodule: ArrayDataModule, family: str) -> None:
    """Tables and figures of the test split for ``dvc plots``."""
    confusion = getattr(module, "confusion_matrix", None)
    if confusion is not None:
        write_confusion_pairs(plots_dir / "confusion.csv", confusion, datamodule.spec.class_names)
    if family == "regression" and datamodule.spec.input_shape == (1,):
        # 1-D inputs: the fitted curve over the test points
        x, y = datamodule.splits["test"].tensors
        with torch.no_grad():
            pred = module(datamodule.model_input(x)).squeeze(1)
        rows = sorted(zip(x[:, 0].tolist(), y.tolist(), pred.tolist(), strict=True))
        save_csv(plots_dir / "predictions.csv", ["x", "y", "predicted"], rows)
    if family == "sequence":
        write_answers(plots_dir / "answers.csv", module, datamodule)
    save_samples = getattr(module, "save_samples", None)
    if callable(save_samples):  # generative models: an image grid of samples
        save_samples(plots_dir / "samples.png")


def write_answers(dest: Path, module: L.LightningModule, datamodule: ArrayDataModule) -> None:
    """One ``question,answer,predicted,right`` row per test question of a sequence model, as text."""
    from pipeline.data.tokens import decode_ids

    x, y = datamodule.splits["test"].tensors
    with torch.no_grad():
        predicted = torch.cat([module(chunk).argmax(dim=-1) for chunk in x.split(4096)])
    questions = decode_ids(x.numpy(), reverse=bool(datamodule.meta.get("reverse_question", False)))
    answers, guesses = decode_ids(y.numpy()), decode_ids(predicted.numpy())
    rows = ((q, a, g, int(a == g)) for q, a, g in zip(questions, answers, guesses, strict=True))
    save_csv(dest, ["question", "answer", "predicted", "right"], rows)


def write_confusion_pairs(dest: Path, confusion: torch.Tensor, class_names: Sequence[str]) -> None:
    """One ``actual,predicted`` row per test example: the table DVC's ``confusion`` plot template counts."""
    counts = confusion.to(torch.int64).tolist()
    rows = (
        (class_names[i], class_names[j]) for i, row in enumerate(counts) for j, n in enumerate(row) for _ in range(n)
    )
    save_csv(dest, ["actual", "predicted"], rows)


def run(cfg: DictConfig) -> None:
    metrics = report_user_errors(lambda: evaluate(cfg))
    log.info("metrics: %s", json.dumps({k: round(v, 5) for k, v in sorted(metrics.items())}))


def main() -> None:
    hydra_app(run, config_name="evaluate")


if __name__ == "__main__":
    main()
