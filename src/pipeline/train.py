"""Train one model from composed configs; the same shape as lightning-hydra-template's train.py.

    python -m pipeline.train experiment=spirals_mlp
    python -m pipeline.train data=circles model=mlp_classifier model.net.hidden=[64,64] optimizer=sgd optimizer.lr=0.05
    python -m pipeline.train -m optimizer=adam,sgd optimizer.lr=1e-3,1e-2
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from pipeline.atomic import save_json
from pipeline.checkpoints import RecordPipelineConfig, check_family, data_record, model_family
from pipeline.data.datamodule import ArrayDataModule
from pipeline.models.base import ModelConfigError
from pipeline.stage import CONFIG_PATH

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig, datamodule: ArrayDataModule) -> L.LightningModule:
    """The model of ``cfg.model``, sized for the data and given the configured optimizer and scheduler."""
    model_class = get_class(cfg.model._target_)
    family_task = getattr(model_class, "task", None)
    if family_task and family_task != datamodule.task:
        raise ModelConfigError(
            f"model {model_class.__name__} is for {family_task} but data={cfg.data.name} is a {datamodule.task} dataset")
    shape_args: dict[str, Any] = {"input_shape": datamodule.input_shape}
    if datamodule.task == "classification":
        shape_args["num_classes"] = datamodule.num_classes
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    # _convert_="all": plain lists and dicts, so the saved hyperparameters hold no OmegaConf objects
    # and checkpoints load with torch.load(weights_only=True).
    try:
        return instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=scheduler, _convert_="all",
                           **shape_args)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ModelConfigError):
            raise exc.__cause__ from None
        raise


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; return every logged metric (the sweeper reads one)."""
    L.seed_everything(cfg.seed, workers=True)

    log.info("Instantiating datamodule <%s>", cfg.data.datamodule._target_)
    datamodule: ArrayDataModule = instantiate(cfg.data.datamodule)

    log.info("Instantiating model <%s>", cfg.model._target_)
    model = build_model(cfg, datamodule)

    if cfg.get("ckpt_path"):  # resuming: refuse another family's checkpoint before any work
        check_family(cfg.ckpt_path, model_family(cfg.model._target_))

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    callbacks.append(RecordPipelineConfig(OmegaConf.to_container(cfg.model, resolve=True), data_record(datamodule)))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]

    log.info("Instantiating trainer <%s>", cfg.trainer._target_)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test"):
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        if best is None:
            log.warning("no best checkpoint (fast_dev_run or no checkpoint callback): testing the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    if cfg.get("metrics_file"):
        save_json(cfg.metrics_file, {k: v for k, v in sorted(metrics.items()) if k.startswith("test/")})
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    optimized = cfg.get("optimized_metric")
    log.info("metrics: %s", json.dumps({k: round(v, 5) for k, v in sorted(metrics.items())}))
    return metrics.get(optimized) if optimized else None


if __name__ == "__main__":
    main()
