"""The one owner of MLflow runs: a run is created or continued, described, and ended here and nowhere else.

Everything goes through an ``MlflowClient`` of the store the config names; nothing sets
MLflow's process-wide state (the one exception, the model upload, is scoped: see
``TrackedRun.log_model``). A run's life:

- ``open_store``: a new SQLite store is created and migrated under a file lock, because
  MLflow migrates a new database in every process that opens it and two at once fail
  (``duplicate column name``);
- ``TrackedRun.start``: ends the runs of dead local processes as KILLED (``reap_dead_runs``),
  then creates a run, or continues the run a resumed checkpoint belongs to (one id, one
  metric history, one final status);
- tags, params and the composed config (secrets redacted: ``pipeline.redact``), then the
  outcome: best checkpoint, model summary, the model itself;
- ``end``: FINISHED, FAILED (an error) or KILLED (interrupted). A process killed outright
  cannot end its run; the next run of the same experiment started on the same host does (or
  ``python -m pipeline.tracking.reap``, for the whole store).

A sweep is a parent run (``start_sweep_parent``) whose jobs find it through the environment
(``PARENT_RUN_ENV``, inherited by local workers and SLURM jobs alike) and tag themselves its
children (``sweep_job_tags``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.atomic import SQLITE_PREFIX, sqlite_creation_lock
from pipeline.redact import redact, redact_text
from pipeline.tracking.processes import is_alive, is_local, process_identity

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
OPTUNA_STATE_TAG = "optuna.state"  # PRUNED on the run of a trial the search's pruner stopped
OPTUNA_TRIAL_TAG = "optuna.trial"  # the trial's number in its study
STUDY_TAG = "optuna.study"  # on a study's parent run: the study's name
PROCESS_TAG = "pipeline.process"  # host/boot/pid/start of the process that trains the run
ENDED_TAG = "pipeline.ended"
PARENT_RUN_ENV = "PIPELINE_MLFLOW_PARENT_RUN_ID"
# The sweep's command-line overrides that every job shares (JSON list): left out of job run names.
SHARED_OVERRIDES_ENV = "PIPELINE_SWEEP_SHARED_OVERRIDES"
RUN_FILE = "mlflow_run.json"  # in a run folder: the MLflow run its checkpoints belong to
MAX_RUN_NAME = 250
MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param value
# MLflow's serialization formats of a PyTorch model: "pt2" (torch.export: a traced graph, loads without
# running pickled code or importing this project; MLflow 3's default) or "pickle" (the module object:
# faster to log, and loads back as the trainable module where `pipeline` is installed).
MODEL_FORMATS = ("pt2", "pickle")


def _serving_check(serialization_format: str) -> dict[str, bool]:
    """MLflow's options for its check that the logged model serves its input example.

    ``pt2`` skips it: ``torch.export`` has just traced the model on that example, and the check would load
    the exported program back and run it again: about 0.1 s of a run's upload (0.85 against 0.72 s,
    ``docs/performance.md``). ``pickle`` keeps it: there MLflow hands extra options on to ``torch.save``,
    which takes no such option."""
    return {"validate_serving_input": False} if serialization_format == "pt2" else {}


@dataclasses.dataclass(frozen=True)
class DatasetInputRecord:
    """One split a run used, as MLflow lists it: ``mnist-train``, its digest, where it lives, and the context
    (training, validation or testing)."""

    name: str
    digest: str
    source: str
    context: str


# --- the store --------------------------------------------------------------------------------------


def local_artifact_root(tracking_uri: str | None) -> Path | None:
    """``mlruns/`` beside a SQLite store's database file; None for servers and other stores.

    MLflow's own default is ``./mlruns`` relative to wherever the process started, which
    scatters the artifacts of runs started from different folders."""
    if not tracking_uri or not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    return Path(tracking_uri.removeprefix(SQLITE_PREFIX)).resolve().parent / "mlruns"


def default_artifact_location(tracking_uri: str | None, experiment_name: str) -> str | None:
    """Where a new experiment of this store keeps its artifacts (None: the store's default)."""
    root = local_artifact_root(tracking_uri)
    return None if root is None else (root / experiment_name).as_uri()


@functools.cache
def open_store(tracking_uri: str) -> Any:
    """An ``MlflowClient`` of the store, whose schema exists and is current before anyone else writes to it.

    Once per process and store: the logger, the run and a sweep's parent all ask for it."""
    from mlflow.tracking import MlflowClient

    if not tracking_uri.startswith(SQLITE_PREFIX):
        # only a local file can be locked from here: migrate a new database server once, before several
        # jobs start on it (`mlflow db upgrade <uri>`, README)
        client = MlflowClient(tracking_uri)
        check_access(client, tracking_uri)
        return client
    with sqlite_creation_lock(tracking_uri):
        client = MlflowClient(tracking_uri)  # creates and migrates the schema (once per process)
        client.search_experiments(max_results=1)
    return client


def check_access(client: Any, tracking_uri: str) -> None:
    """One request before any work: a server that wants a login says so with its name, not a stack trace."""
    from mlflow.exceptions import MlflowException

    from pipeline.errors import ConfigError

    try:
        client.search_experiments(max_results=1)
    except MlflowException as error:
        if error.error_code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
        refused = "wants a login" if error.error_code == "UNAUTHENTICATED" else "refused this account"
        raise ConfigError(
            f"the MLflow server {redact_text(tracking_uri)} {refused} ({error.error_code}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account it knows (README, Team)"
        ) from None


def experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``: created when missing (also when another process creates it at the same
    moment), restored when a user deleted it in the UI (MLflow refuses runs in a deleted experiment)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri, name))
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def reap_dead_runs(client: Any, experiment_ids: Sequence[str] | None = None) -> list[str]:
    """End as KILLED every RUNNING run whose process, on this host, no longer lives; returns their ids."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    running = client.search_runs(list(experiment_ids), "attributes.status = 'RUNNING'", max_results=5000)
    reaped = []
    for run in running:
        identity = run.data.tags.get(PROCESS_TAG, "")
        if identity and is_local(identity) and not is_alive(identity):
            client.set_tag(run.info.run_id, ENDED_TAG, "its process died; marked KILLED by a later command")
            client.set_terminated(run.info.run_id, "KILLED")
            reaped.append(run.info.run_id)
    if reaped:
        log.warning("marked %d MLflow run(s) of dead processes KILLED: %s", len(reaped), ", ".join(reaped))
    return reaped


# --- one run ------------------------------------------------------------------------------------------


class TrackedRun:
    """One MLflow run of this process, from its start (or continuation) to its final status."""

    def __init__(
        self, client: Any, tracking_uri: str, run_id: str, experiment_id: str, continued: bool = False
    ) -> None:
        self.client, self.tracking_uri = client, tracking_uri
        self.run_id, self.experiment_id = run_id, experiment_id
        self.continued = continued  # a resumed training's run, set RUNNING again
        self.monitor: Any = None  # the system-metrics monitor, when started

    @classmethod
    def start(
        cls, tracking_uri: str, experiment_name: str, tags: Mapping[str, str], continue_run_id: str | None = None
    ) -> TrackedRun:
        """A new run with ``tags``, or the run ``continue_run_id`` set RUNNING again (a resumed training)."""
        from mlflow.tracking.context.registry import resolve_tags

        client = open_store(tracking_uri)
        experiment = experiment_id(client, tracking_uri, experiment_name)
        reap_dead_runs(client, [experiment])
        tags = {**redact(dict(tags)), PROCESS_TAG: process_identity()}
        run_id = _continuable(client, continue_run_id, experiment) if continue_run_id else None
        if run_id is None:
            return cls(
                client, tracking_uri, client.create_run(experiment, tags=resolve_tags(tags)).info.run_id, experiment
            )
        # this process's identity first: a run RUNNING under a dead one would be reaped meanwhile
        continued = {k: v for k, v in tags.items() if k not in (RUN_NAME_TAG, PARENT_TAG)}
        _log_tags(client, run_id, {**continued, "pipeline.resumed": "true"})
        client.update_run(run_id, status="RUNNING")
        if ENDED_TAG in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, ENDED_TAG)
        log.info("continuing MLflow run %s", run_id)
        return cls(client, tracking_uri, run_id, experiment, continued=True)

    def __getstate__(self) -> dict[str, Any]:
        """Without the system-metrics monitor (a thread): DDP's spawned processes get a copy of the logger, and
        the process that started the run keeps monitoring it."""
        return {**self.__dict__, "monitor": None}

    def log_tags(self, tags: Mapping[str, str]) -> None:
        _log_tags(self.client, self.run_id, redact(dict(tags)))

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The composed config, secrets redacted: flattened into params (``optimizer/lr``) and whole as
        ``config.yaml``. A continued run keeps its params; values changed since are noted in a tag."""
        from omegaconf import OmegaConf

        config = redact(dict(config))
        changed = self.log_params(flatten(config))
        if changed:
            self.log_tags({"pipeline.resume_changed_params": " ".join(changed)})
        # a continued run keeps the config it started with beside the one it resumed with
        name = "config_resumed.yaml" if self.continued else "config.yaml"
        self.client.log_text(self.run_id, OmegaConf.to_yaml(config), name)

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        """Params not logged yet, secrets redacted; returns the keys the run already has with another value
        (MLflow refuses to change a param, so a resumed run keeps its first value)."""
        from mlflow.entities import Param

        values = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in redact(dict(params)).items()}
        logged = self.client.get_run(self.run_id).data.params
        new = [Param(key, value) for key, value in values.items() if key not in logged]
        for start in range(0, len(new), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=new[start : start + 100])
        return sorted(key for key, value in values.items() if key in logged and logged[key] != value)

    def log_datasets(self, inputs: Sequence[DatasetInputRecord]) -> None:
        """The run's data as MLflow dataset inputs (the UI's *Datasets* column), in one call."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        datasets = [
            DatasetInput(
                Dataset(name=i.name, digest=i.digest, source_type="local", source=json.dumps({"uri": i.source})),
                tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=i.context)],
            )
            for i in inputs
        ]
        if datasets:
            self.client.log_inputs(self.run_id, datasets=datasets)

    def monitor_system(self, interval: float) -> None:
        """MLflow's own system-metrics monitor (CPU, memory, disk, network; GPUs through nvidia-ml-py) on this
        run, sampling every ``interval`` seconds until ``end``: Lightning's logger creates runs without it,
        whatever MLflow's global switch says."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # a continued run's samples go on from its last step
        self.monitor = SystemMetricsMonitor(
            self.run_id, sampling_interval=interval, resume_logging=self.continued, tracking_uri=self.tracking_uri
        )
        self.monitor.start()

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_model(
        self, model: Any, example: Any, serialization_format: str, metadata: dict[str, Any] | None = None
    ) -> str:
        """``model`` as the run's MLflow model ``model`` (PyTorch flavour), with signature, input example and
        ``metadata`` (in its MLmodel file); returns its URI (``models:/<model id>``)."""
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        if serialization_format not in MODEL_FORMATS:
            raise ValueError(f"model format {serialization_format!r}: expected one of {', '.join(MODEL_FORMATS)}")
        with torch.no_grad():
            prediction = model(torch.from_numpy(example)).numpy()
        return self._log_flavour(
            mlflow.pytorch.log_model,
            pytorch_model=model,
            input_example=example,
            signature=infer_signature(example, prediction),
            serialization_format=serialization_format,
            metadata=metadata,
            **_serving_check(serialization_format),
        )

    def log_text_model(self, answerer: Any, example: list[str], metadata: dict[str, Any] | None = None) -> str:
        """A sequence model (``pipeline.tracking.model.QuestionAnswerer``) as a python-function model that takes
        and returns text (``pipeline.tracking.text_model``); returns its URI."""
        import mlflow.pyfunc
        from mlflow.models import Model

        from pipeline.tracking.text_model import TextModel

        # Model.log, what mlflow.pyfunc.log_model calls: only it takes the run to log into
        log_pyfunc = functools.partial(Model.log, artifact_path=None, flavor=mlflow.pyfunc)
        return self._log_flavour(log_pyfunc, python_model=TextModel(answerer), input_example=example, metadata=metadata)

    def _log_flavour(self, log_model: Any, **options: Any) -> str:
        """``log_model`` of an MLflow flavour, as this run's model ``model``.

        MLflow's model logging has no client form: it reads the process's tracking URI (so it runs with
        that URI set for the call only, ``_scoped_tracking_uri``) and would file the model under the
        process's active experiment (so the model entity is created here, in the run's experiment)."""
        import mlflow
        import torch

        # Requirements stated, not inferred: inference imports the model in a subprocess (seconds).
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]
        entity = self.client.create_logged_model(
            self.experiment_id,
            name="model",
            source_run_id=self.run_id,
            params=self.client.get_run(self.run_id).data.params,
        )
        with _scoped_tracking_uri(self.tracking_uri):
            info = log_model(
                name="model",
                run_id=self.run_id,
                model_id=entity.model_id,
                pip_requirements=requirements,
                **options,
            )
        return str(info.model_uri)

    def end(self, status: str, tags: dict[str, str] | None = None) -> None:
        """FINISHED, FAILED or KILLED, with any last tags (an Optuna trial's state)."""
        if self.monitor is not None:
            self.monitor.finish()  # its last samples, while the run is still RUNNING
            self.monitor = None
        for key, value in (tags or {}).items():
            self.client.set_tag(self.run_id, key, value)
        self.client.set_terminated(self.run_id, status)
        log.info("MLflow run %s ended %s", self.run_id, status)

    def save_reference(self, run_dir: str | Path, experiment_name: str) -> None:
        """``<run folder>/mlflow_run.json``: how a resume from this folder's checkpoints finds this run."""
        from pipeline.atomic import save_json

        save_json(
            Path(run_dir) / RUN_FILE,
            {
                "run_id": self.run_id,
                "experiment_id": self.experiment_id,
                "experiment_name": experiment_name,
                "tracking_uri": redact_text(self.tracking_uri),
            },
        )


@contextlib.contextmanager
def _scoped_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to ``uri`` for the block, then put back as it was, and so is
    ``MLFLOW_TRACKING_URI``: MLflow's own ``_use_tracking_uri`` deletes that variable when it restores."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous, variable = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # None (no URI set) is what MLflow's own _use_tracking_uri restores too; its signature leaves None out
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]
        if variable is not None:
            os.environ["MLFLOW_TRACKING_URI"] = variable


def run_of_checkpoint(checkpoint: str | Path) -> str | None:
    """The MLflow run a checkpoint was written by: ``mlflow_run.json`` in its folder or the run folder above."""
    folder = Path(checkpoint).absolute().parent  # not resolved: a DVC-cache symlink points elsewhere
    for candidate in (folder / RUN_FILE, folder.parent / RUN_FILE):
        if candidate.is_file():
            return json.loads(candidate.read_text()).get("run_id")
    return None


def _continuable(client: Any, run_id: str, experiment: str) -> str | None:
    """``run_id`` when it is a run of ``experiment`` in this store that no live process is training, else None
    (a new run is started)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        run = None
    if run is None or run.info.experiment_id != experiment or run.info.lifecycle_stage != "active":
        log.warning("the checkpoint's MLflow run %s is not in this store's experiment: starting a new run", run_id)
        return None
    identity = run.data.tags.get(PROCESS_TAG, "")
    if run.info.status == "RUNNING" and (not identity or not is_local(identity) or is_alive(identity)):
        log.warning(
            "the checkpoint's MLflow run %s is still being trained (or by a process that cannot be "
            "checked from here): starting a new run",
            run_id,
        )
        return None
    return run_id


def _log_tags(client: Any, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as ``a/b/c`` keys (Lightning's convention for MLflow params); lists stay whole."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


# --- sweeps: a parent run and its children ---------------------------------------------------------------


def start_sweep_parent(tracking_uri: str, experiment_name: str, tags: Mapping[str, str]) -> str:
    """The parent run of a sweep; its jobs become children through ``PARENT_RUN_ENV``."""
    run = TrackedRun.start(tracking_uri, experiment_name, {**tags, "pipeline.sweep": "parent"})
    os.environ[PARENT_RUN_ENV] = run.run_id
    return run.run_id


def resume_sweep_parent(tracking_uri: str, run_id: str) -> str:
    """A study's parent run, RUNNING again for one more run (or worker) of the study; its jobs become children."""
    open_store(tracking_uri).update_run(run_id, status="RUNNING")
    os.environ[PARENT_RUN_ENV] = run_id
    return run_id


def sweep_job_tags() -> dict[str, str]:
    """Tags that make a sweep job's run a child of the sweep's parent run, named after its own overrides
    (none outside a tracked multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    parent = os.environ.get(PARENT_RUN_ENV)
    if not parent or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    from pipeline.studies import TRIAL_ENV

    job = HydraConfig.get().job
    trial = os.environ.get(TRIAL_ENV)  # a search's trial (workers of one study share the numbering)
    overrides = list(HydraConfig.get().overrides.task)
    # By key: the sweeper writes a job's values its own way (false on the command line is False here)
    shared = {item.split("=", 1)[0] for item in json.loads(os.environ.get(SHARED_OVERRIDES_ENV, "[]"))}
    name = " ".join(item for item in overrides if item.split("=", 1)[0] not in shared)
    return {
        PARENT_TAG: parent,
        RUN_NAME_TAG: f"#{trial if trial is not None else job.num} {name}"[:MAX_RUN_NAME],
        "sweep.job": str(job.num),
        "sweep.overrides": json.dumps(overrides)[:5000],
        **({OPTUNA_TRIAL_TAG: trial} if trial is not None else {}),
    }


def end_run(tracking_uri: str, run_id: str, status: str) -> None:
    """End a run of this store by id (a sweep's parent, from the process that launched the sweep)."""
    open_store(tracking_uri).set_terminated(run_id, status)
