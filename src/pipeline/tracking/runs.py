"""MLflow tracking: what a training run records beside its metrics, so a run in the UI explains itself.

The store is whatever ``logger.mlflow.tracking_uri`` names: by default a SQLite database and
an artifact folder at the project root (``conf/logger/mlflow.yaml``), or a tracking server
when ``MLFLOW_TRACKING_URI`` is set. Lightning's ``MLFlowLogger`` logs the metrics; this
module adds, once per run and from rank zero only:

- tags: the git commit (and whether the working tree was dirty), the experiment preset,
  the sha256 of every raw file the dataset was built from (from the preprocess stage's
  ``meta.json``), and the DVC stage and experiment when DVC runs the command;
- the fully composed config, flattened into params (Lightning's ``log_hyperparams``
  flattens and shortens over-long values) and whole as ``config.yaml``;
- after training, the best checkpoint (``checkpoints/``), the model summary (layers,
  parameter counts) as ``model_summary.txt``, the fitted ``w``/``b`` of a linear regression
  as metrics, and the trained model in MLflow's PyTorch flavour (``model``; see
  ``pipeline.tracking.model``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, OmegaConf

from pipeline.tracking.model import log_model
from pipeline.tracking.store import PipelineMLFlowLogger

# MLflow refuses tag values over 8,000 characters; ours are short, but a path may not be.
MAX_TAG_LENGTH = 5000


def git_state(root: str | Path) -> dict[str, str]:
    """The commit checked out in ``root`` and whether tracked files differ from it ('unknown' outside git)."""
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": "unknown" if status is None else str(bool(status)).lower()}


def run_tags(cfg: DictConfig, meta: Mapping[str, Any], experiment: str | None) -> dict[str, str]:
    """The tags that say where a run came from: code, preset, data, and the DVC stage that ran it."""
    tags = git_state(cfg.paths.root_dir)
    tags["pipeline.experiment"] = experiment or "none"
    tags["pipeline.task_name"] = str(cfg.get("task_name", ""))
    tags["data.name"] = str(meta.get("name", ""))
    for filename, record in sorted(meta.get("sources", {}).items()):
        if isinstance(record, Mapping) and "sha256" in record:
            tags[f"data.sha256.{filename}"] = str(record["sha256"])
    for variable, tag in (("DVC_STAGE", "dvc.stage"), ("DVC_EXP_NAME", "dvc.experiment")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return {key: value[:MAX_TAG_LENGTH] for key, value in tags.items()}


@rank_zero_only
def record_run(logger: MLFlowLogger, cfg: DictConfig, meta: Mapping[str, Any], experiment: str | None) -> None:
    """Tags, flattened params and the composed config as ``config.yaml``, on the logger's run."""
    from mlflow.entities import RunTag

    client, run_id = logger.experiment, logger.run_id
    tags = [RunTag(key, value) for key, value in run_tags(cfg, meta, experiment).items()]
    client.log_batch(run_id, tags=tags)  # one write: each costs milliseconds on a SQLite store
    container = composed_config(cfg)
    logger.log_hyperparams(container)
    client.log_text(run_id, OmegaConf.to_yaml(container), "config.yaml")


@rank_zero_only
def record_outcome(logger: MLFlowLogger, model: L.LightningModule, datamodule: Any, best_checkpoint: str | None,
                   extra_metrics: Mapping[str, float]) -> None:
    """The best checkpoint, the model summary, metrics computed after training and the model itself."""
    client, run_id = logger.experiment, logger.run_id
    client.log_text(run_id, str(ModelSummary(model, max_depth=-1)), "model_summary.txt")
    if best_checkpoint:
        client.log_artifact(run_id, best_checkpoint, "checkpoints")
    if extra_metrics:
        logger.log_metrics(dict(extra_metrics))
    if isinstance(logger, PipelineMLFlowLogger) and logger.pytorch_model:
        log_model(run_id, logger.tracking_uri, model, datamodule, logger.model_format)


def composed_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain values, resolved, without Hydra's own section (when a test composed it in)."""
    return {key: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
            for key, node in ((k, cfg[k]) for k in cfg if k != "hydra")}


def mlflow_loggers(loggers: list[Any]) -> list[MLFlowLogger]:
    return [logger for logger in loggers if isinstance(logger, MLFlowLogger)]
