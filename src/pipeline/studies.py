"""Optuna studies as the sweeper and its jobs both see them: where a study is stored, and which trial a
job is running.

The sweeper asks the study for a trial and launches a job for it; the job (perhaps another process,
another machine) finds the same trial through the ``PIPELINE_OPTUNA_*`` variables the sweeper sets in
its environment (``hydra.job.env_set``), so a pruning callback can report to it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from pipeline.atomic import SQLITE_PREFIX, sqlite_creation_lock

STORAGE_ENV = "PIPELINE_OPTUNA_STORAGE"
STUDY_ENV = "PIPELINE_OPTUNA_STUDY"
TRIAL_ENV = "PIPELINE_OPTUNA_TRIAL"
JOURNAL_PREFIX = "journal:"


def open_storage(url: str | None) -> BaseStorage | str | None:
    """An RDB URL (``postgresql://...``) as Optuna takes it, a SQLite file's storage with its schema made
    (under ``sqlite_creation_lock``), ``journal:<file>`` as a JournalStorage on that file (safe for many
    processes on one file system), None in memory."""
    if not url:
        return None
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith(SQLITE_PREFIX):  # two workers starting a study at once would both create its tables
        with sqlite_creation_lock(url):
            return RDBStorage(url)
    return url


PRUNERS = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}


def make_pruner(spec: Any) -> optuna.pruners.BasePruner | None:
    """A pruner from ``hydra.sweeper.pruner``: a name (``median``, with Optuna's defaults), a config of the
    ``hydra/sweeper/pruner`` group (``_target_``), an already built pruner, or None (Optuna's default)."""
    if spec is None or isinstance(spec, optuna.pruners.BasePruner):
        return spec
    if isinstance(spec, str):
        if spec not in PRUNERS:
            raise ValueError(f"hydra.sweeper.pruner={spec!r}: expected one of {', '.join(PRUNERS)}")
        return PRUNERS[spec]()
    from hydra.utils import instantiate

    return instantiate(spec)


def job_environment(storage: str, study_name: str, trial_number: int) -> dict[str, str]:
    """What a job needs to find its trial."""
    return {STORAGE_ENV: storage, STUDY_ENV: study_name, TRIAL_ENV: str(trial_number)}


def current_trial(pruner: optuna.pruners.BasePruner | None = None) -> optuna.trial.Trial | None:
    """The trial this job runs, from its environment; None outside a search or for an in-memory study.

    ``pruner`` must be the sweeper's: a loaded study decides ``should_prune`` with the pruner it is given."""
    storage_url, study_name, number = (os.environ.get(k) for k in (STORAGE_ENV, STUDY_ENV, TRIAL_ENV))
    if not (storage_url and study_name and number):
        return None
    storage = optuna.storages.get_storage(open_storage(storage_url))
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), int(number))
    return optuna.trial.Trial(study, trial_id)


PARENT_RUN_ATTR = "mlflow_parent_run_id"  # the study's user attributes naming its MLflow parent run, per store


def parent_run_attr(tracking_uri: str) -> str:
    """The user attribute naming the study's parent run in this MLflow store (a study continued against
    another store, a colleague's or a server, gets a parent there too). Credentials are left out."""
    from pipeline.redact import redact_text

    return f"{PARENT_RUN_ATTR}@{redact_text(tracking_uri)}"


def claim_study(storage: str, study_name: str, direction: Literal["minimize", "maximize"]) -> tuple[optuna.Study, bool]:
    """The study, and whether this call created it: of workers starting at once exactly one creates it
    (the storage refuses a second study of the same name), so exactly one creates its parent run."""
    opened = open_storage(storage)
    assert opened is not None, "a persistent study needs a storage"
    try:
        return optuna.create_study(study_name=study_name, storage=opened, direction=direction), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=study_name, storage=opened), False


def wait_for_attr(study: optuna.Study, key: str, timeout: float = 60.0) -> Any:
    """A user attribute another worker is about to set on a study it has just created (None after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while key not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
    return study.user_attrs.get(key)
