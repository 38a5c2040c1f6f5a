"""Lightning's side of a tracked run: the MLflow logger of conf/logger/mlflow.yaml, and ``track_run``,
the block of ``pipeline.train`` that starts the run and, whatever happens inside, ends it.

Lightning's ``MLFlowLogger`` creates its run on first use and marks it FINISHED when ``fit``
returns, before the test and the model upload, and it starts a second run when a training
resumes. Here the run belongs to ``pipeline.tracking.run.TrackedRun``: the logger only logs
metrics and params into it, and ``track_run`` ends it once, in the state the block ended in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.logger import _convert_params
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError
from pipeline.tracking.batched_metrics import BatchedMetricsClient
from pipeline.tracking.model import servable
from pipeline.tracking.provenance import dataset_inputs, environment_tags, source_tags
from pipeline.tracking.registry import register_run_model, registered_name
from pipeline.tracking.run import (
    MODEL_FORMATS,
    OPTUNA_STATE_TAG,
    RUN_NAME_TAG,
    TrackedRun,
    default_artifact_location,
    flatten,
    open_store,
    run_of_checkpoint,
    sweep_job_tags,
)

log = logging.getLogger(__name__)


class PipelineMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` writing into a run that ``TrackedRun`` owns (see the module docstring).

    ``pytorch_model``: log the trained model in MLflow's PyTorch flavour, saved as ``model_format``
    (``pipeline.tracking.run.MODEL_FORMATS``). A local store keeps artifacts beside its database.
    ``metrics_flush_interval``: the longest a logged metric waits on the client before it is written
    (``pipeline.tracking.batched_metrics``; 0 writes each call at once).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        run_name: str | None = None,
        artifact_location: str | None = None,
        pytorch_model: bool = True,
        model_format: str = "pt2",
        registered_model_name: str | None = None,
        system_metrics_interval: float | None = 10.0,
        metrics_flush_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        if model_format not in MODEL_FORMATS:
            expected = ", ".join(MODEL_FORMATS)
            raise ConfigError(f"logger.mlflow.model_format={model_format!r}: expected one of {expected}")
        if kwargs.get("log_model"):
            raise ConfigError("logger.mlflow.log_model: the pipeline logs the best checkpoint itself (keep it false)")
        open_store(tracking_uri)  # created and migrated under a lock before Lightning's client (every rank's) opens it
        location = artifact_location or default_artifact_location(tracking_uri, experiment_name)
        super().__init__(
            tracking_uri=tracking_uri,
            experiment_name=experiment_name,
            run_name=run_name,
            artifact_location=location,
            **kwargs,
        )
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.pytorch_model, self.model_format = pytorch_model, model_format
        self.registered_model_name = registered_model_name
        self.system_metrics_interval = system_metrics_interval
        self.metrics_flush_interval = metrics_flush_interval
        self.run: TrackedRun | None = None
        self.batched: BatchedMetricsClient | None = None

    def begin(self, tags: Mapping[str, str], continue_run_id: str | None) -> TrackedRun:
        """Start (or continue) the run and log into it from now on."""
        if self.run_name:
            tags = {**tags, RUN_NAME_TAG: self.run_name}
        self.run = TrackedRun.start(self.tracking_uri, self.experiment_name, tags, continue_run_id)
        # MLFlowLogger's own state, set as its `experiment` property would for a given run_id (without
        # that property's call of mlflow.set_tracking_uri, a process-wide setting); its metric writes wait
        # on the client and go to the store together (pipeline.tracking.batched_metrics).
        self.batched = BatchedMetricsClient(self.run.client, self.metrics_flush_interval)
        self._mlflow_client = self.batched  # type: ignore[assignment]
        self._run_id, self._experiment_id, self._initialized = self.run.run_id, self.run.experiment_id, True
        return self.run

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The module's hyperparameters, which Lightning logs at fit start (again when a run resumes)."""
        if self.run is None:
            super().log_hyperparams(params)
        else:
            self.run.log_params(flatten(_convert_params(params)))

    def save(self) -> None:
        """Lightning calls this after each of its own metric writes (the end of every epoch and stage): the
        values waiting since, the per-step loss among them, go to the store with them."""
        super().save()
        if self.batched is not None:
            self.batched.flush()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Nothing: ``track_run`` ends the run, after the test and the model upload."""

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        """A file of the run folder as an artifact (figure callbacks publish through this)."""
        if self.run is not None:
            self.run.log_artifact(path, artifact_dir)


class RunOutcome:
    """What a tracked training reports after it: the best checkpoint, the model summary and the model, which
    it registers when the config names a registered model (a sweep registers its best job's, afterwards)."""

    def __init__(self, trackers: list[PipelineMLFlowLogger], datamodule: Any, cfg: DictConfig) -> None:
        self.trackers, self.datamodule = trackers, datamodule
        self.register_model = bool(cfg.get("register_model"))
        self.sweep_job = bool(sweep_job_tags())  # a sweep registers its best job's model once, at its end
        self.metric, self.mode = cfg.get("optimized_metric"), str(cfg.get("optimized_mode", "min"))

    def record(self, model: L.LightningModule, best_checkpoint: str | None) -> None:
        for tracker in self.trackers:
            run = tracker.run
            assert run is not None
            tracker.save()  # every metric in the store before the registry compares this run's with the champion's
            run.log_text(str(ModelSummary(model, max_depth=-1)), "model_summary.txt")
            if best_checkpoint:
                run.log_artifact(best_checkpoint, "checkpoints")
            if tracker.pytorch_model:
                module, example, metadata = servable(model, self.datamodule)
                if metadata["output"] == "text":  # a sequence model: text in, text out
                    model_uri = run.log_text_model(module, example, metadata)
                else:
                    model_uri = run.log_model(module, example, tracker.model_format, metadata)
                name = registered_name(tracker.registered_model_name, tracker.experiment_name, self.register_model)
                if name and not self.sweep_job:
                    register_run_model(run.tracking_uri, run.run_id, name, self.metric, self.mode, model_uri)


@contextlib.contextmanager
def track_run(
    trainer: L.Trainer, cfg: DictConfig, datamodule: Any, resume_from: str | None = None
) -> Iterator[RunOutcome]:
    """Start (or, resuming from a checkpoint of a tracked run, continue) the run of every MLflow logger of
    ``trainer`` with tags and config; end each FINISHED when the block completes, KILLED when it was
    interrupted (Ctrl+C, SIGTERM), FAILED on any error. Rank zero only; nothing without an MLflow logger."""
    trackers = [lg for lg in trainer.loggers if isinstance(lg, PipelineMLFlowLogger)] if trainer.is_global_zero else []
    try:
        if trackers:
            continue_run_id = run_of_checkpoint(resume_from) if resume_from else None
            tags = {**source_tags(cfg, datamodule.meta, experiment_preset()), **environment_tags(), **sweep_job_tags()}
            for tracker in trackers:
                run = tracker.begin(tags, continue_run_id)
                if tracker.system_metrics_interval:
                    run.monitor_system(float(tracker.system_metrics_interval))
                run.log_config(composed_config(cfg))
                if datamodule.processed_dir is not None:  # None: an environment, no files
                    run.log_datasets(dataset_inputs(datamodule.meta, datamodule.processed_dir, cfg.paths.root_dir))
                run.save_reference(trainer.default_root_dir, tracker.experiment_name)
        yield RunOutcome(trackers, datamodule, cfg)
        for tracker in trackers:  # the values still waiting; an error here ends the run FAILED
            tracker.save()
    except BaseException as exc:
        pruned = type(exc).__name__ == "TrialPruned"  # optuna's: the search stopped this trial early
        _end_all(
            trackers,
            "FINISHED" if pruned else final_status(exc, trainer),
            {OPTUNA_STATE_TAG: "PRUNED"} if pruned else None,
        )
        raise
    _end_all(trackers, "FINISHED")


def final_status(exc: BaseException, trainer: L.Trainer) -> str:
    """KILLED for an interruption (Ctrl+C, which Lightning turns into exit(1), or SIGTERM), else FAILED."""
    if isinstance(exc, (KeyboardInterrupt, SIGTERMException)):
        return "KILLED"
    if isinstance(exc, SystemExit):
        return "KILLED" if trainer.interrupted else ("FINISHED" if exc.code in (0, None) else "FAILED")
    return "FAILED"


def _end_all(trackers: list[PipelineMLFlowLogger], status: str, tags: dict[str, str] | None = None) -> None:
    for tracker in trackers:
        if tracker.run is None:
            continue
        try:
            tracker.save()  # what waited on the client when the block failed: the curve up to the failure
        except Exception:
            log.exception("could not write the last metrics of MLflow run %s", tracker.run.run_id)
        try:
            tracker.run.end(status, tags)
        except Exception:
            log.exception("could not end MLflow run %s as %s", tracker.run.run_id, status)


def experiment_preset() -> str | None:
    """The ``experiment=`` option this run was composed with, when Hydra composed it."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("experiment")


def composed_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain values, resolved, without Hydra's own section (when a test composed it in)."""
    return {  # a composed config's top-level keys are strings (Hydra's groups and options)
        cast(str, key): OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        for key, node in ((k, cfg[k]) for k in cfg if k != "hydra")
    }
