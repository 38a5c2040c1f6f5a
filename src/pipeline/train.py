"""Train one model from composed configs; the same shape as lightning-hydra-template's train.py.

python -m pipeline.train experiment=spirals_mlp
python -m pipeline.train data=circles model=mlp_classifier model.net.hidden=[64,64] optimizer=sgd optimizer.lr=0.05
python -m pipeline.train -m optimizer=adam,sgd optimizer.lr=1e-3,1e-2
python -m pipeline.train experiment=spirals_mlp resume=true    # continue the newest run of the task
"""

from __future__ import annotations

import json
import logging
import shutil
from typing import Any, cast

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from pipeline.atomic import atomic_path, save_json
from pipeline.callbacks.checkpoint_record import RecordPipelineConfig
from pipeline.callbacks.figures import FigureCallback
from pipeline.callbacks.history import EpochHistory
from pipeline.cli import hydra_app, report_user_errors
from pipeline.config_schema import validate
from pipeline.data.datamodule import ArrayDataModule
from pipeline.data.spec import DatasetSpec
from pipeline.errors import ModelConfigError, build
from pipeline.models.checkpoints import (
    check_family,
    checkpoint_record,
    model_family,
    newest_last_checkpoint,
    read_checkpoint,
)
from pipeline.process_settings import configure_process
from pipeline.tracking.logger import track_run

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; return every logged metric (the sweeper reads one)."""
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    configure_process(cfg)

    log.info("Instantiating datamodule <%s>", cfg.data.datamodule._target_)
    datamodule: ArrayDataModule = build(cfg.data.datamodule)

    log.info("Instantiating model <%s>", cfg.model._target_)
    model = build_model(cfg, datamodule.spec)
    ckpt_path = checkpoint_to_resume(cfg)

    log.info("Instantiating callbacks and loggers")
    callbacks = instantiate_callbacks(cfg, datamodule.spec, model)
    loggers = [build(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]

    log.info("Instantiating trainer <%s>", cfg.trainer._target_)
    trainer: L.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    with track_run(trainer, cfg, datamodule, resume_from=ckpt_path) as run:  # ends FINISHED, FAILED or KILLED
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = best_checkpoint(trainer)
        if cfg.get("model_file"):
            export_checkpoint(trainer, best, cfg.model_file)
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        elif best is not None:  # what is logged below is the best model, tested or not
            model.load_state_dict(read_checkpoint(best)["state_dict"])
        run.record(model, best)

    if cfg.get("metrics_file"):
        save_json(cfg.metrics_file, {k: v for k, v in sorted(metrics.items()) if k.startswith(("test/", "fit/"))})
    return metrics


def build_model(cfg: DictConfig, spec: DatasetSpec) -> L.LightningModule:
    """The model of ``cfg.model``, sized for the data and given the configured optimizer and scheduler."""
    model_class = get_class(cfg.model._target_)
    family_task = getattr(model_class, "task", None)
    if family_task and family_task != spec.task:
        raise ModelConfigError(
            f"model {model_class.__name__} is for {family_task} but data={cfg.data.name} is a {spec.task} dataset"
        )
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    # _convert_="all": plain lists and dicts, so the saved hyperparameters hold no OmegaConf objects
    # and checkpoints load with torch.load(weights_only=True).
    return build(
        cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=scheduler, _convert_="all", **spec.model_size()
    )


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """``ckpt_path`` when given, else with ``resume=true`` the newest ``last.ckpt`` of this ``task_name``'s runs;
    a checkpoint of another model family is refused before any work."""
    ckpt_path, newest = cfg.get("ckpt_path"), False
    if not ckpt_path and cfg.get("resume"):
        ckpt_path, newest = newest_last_checkpoint(cfg.paths.log_dir, cfg.task_name), True
    if ckpt_path:
        data = check_family(ckpt_path, model_family(cfg.model._target_))["pipeline"]["data"]["name"]
        if newest and data != cfg.data.name:  # task_name (default: train) may be shared by unrelated runs
            raise ModelConfigError(
                f"resume=true: the newest checkpoint of task_name={cfg.task_name}, {ckpt_path}, was trained on "
                f"data={data}, not data={cfg.data.name}; give ckpt_path=<checkpoint> or the run's own task_name"
            )
        log.info("Resuming from %s", ckpt_path)
    return ckpt_path


def instantiate_callbacks(cfg: DictConfig, spec: DatasetSpec, model: L.LightningModule) -> list[L.Callback]:
    """The configured callbacks, but for figures this model and data cannot have (Lightning calls each hook
    of each callback at every step), plus the checkpoints' record of model and data, and the epoch history."""
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    callbacks = [c for c in callbacks if not isinstance(c, FigureCallback) or c.applies(model, spec.input_shape)]
    record = checkpoint_record(
        cast(dict[str, Any], OmegaConf.to_container(cfg.model, resolve=True)),
        spec,
        cast(dict[str, Any], OmegaConf.to_container(cfg.data.datamodule, resolve=True)),
    )
    callbacks.append(RecordPipelineConfig(record))
    if cfg.get("history_file"):
        callbacks.append(EpochHistory(cfg.history_file))
    return callbacks


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint's path; None without one (fast_dev_run, or no checkpoint callback)."""
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
        return checkpoint.best_model_path
    log.warning("no best checkpoint (fast_dev_run or no checkpoint callback): the current weights are reported")
    return None


def export_checkpoint(trainer: L.Trainer, best: str | None, dest: str) -> None:
    """The best checkpoint (or, without one, the final weights) at a fixed path: the DVC stage's output."""
    with atomic_path(dest) as tmp:
        if best is not None:
            shutil.copyfile(best, tmp)
        else:
            trainer.save_checkpoint(tmp, weights_only=False)
    log.info("model checkpoint: %s (from %s)", dest, best or "the final weights")


def run(cfg: DictConfig) -> float | None:
    """The Hydra task: train, log the metrics, and return the one a sweeper optimises."""
    metrics = report_user_errors(lambda: train(cfg))
    log.info("metrics: %s", json.dumps({k: round(v, 5) for k, v in sorted(metrics.items())}))
    optimized = cfg.get("optimized_metric")
    return metrics.get(optimized) if optimized else None


def main() -> None:
    hydra_app(run, config_name="train")


if __name__ == "__main__":
    main()
