"""MLflow's model registry: a run's model as a new version of a registered model, and the ``champion`` alias.

``logger.mlflow.registered_model_name=<name>`` (or ``register_model=true``: the experiment's name)
registers the model a training logged; a sweep registers its best job's model once, after the
sweep. The version carries the run's provenance tags (git commit, data checksums, preset) and its
test metrics and ``optimized_metric`` as tags. It takes the alias ``champion`` when its
``optimized_metric`` beats the current champion's in ``optimized_mode`` (or when there is none);
the previous champion keeps its version number and loses only the alias. Serve or load the
champion as ``models:/<name>@champion``.

Two registrations of one name at the same moment both get versions (MLflow's store numbers them
in turn); each compares with the champion it read, so the later of two close calls may win.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pipeline.errors import ConfigError
from pipeline.tracking.run import ENDED_TAG, PROCESS_TAG, _scoped_tracking_uri, open_store

log = logging.getLogger(__name__)

CHAMPION = "champion"
# Run tags that describe a process, not the model: left off its versions.
PROCESS_TAGS = (PROCESS_TAG, ENDED_TAG)


def registered_name(registered_model_name: str | None, experiment_name: str, register_model: bool) -> str | None:
    """``logger.mlflow.registered_model_name``, else with ``register_model=true`` the experiment's name, else None
    (the training's logger and a sweep's end decide alike)."""
    return registered_model_name or (experiment_name if register_model else None)


def register_run_model(
    tracking_uri: str, run_id: str, name: str, metric: str | None, mode: str, model_uri: str | None = None
) -> Any:
    """A new version of ``name`` from the run's model (``model_uri``, else the run's logged ``model``),
    crowned ``champion`` when it is the best so far; returns the ``ModelVersion``."""
    import mlflow

    if mode not in ("min", "max"):  # before a version exists
        raise ConfigError(f"optimized_mode={mode!r}: expected min or max")
    client = open_store(tracking_uri)
    run = client.get_run(run_id)
    # MLflow's registration resolves model URIs through the process-wide tracking URI
    with _scoped_tracking_uri(tracking_uri):
        version = mlflow.register_model(model_uri or f"runs:/{run_id}/model", name, tags=version_tags(run, metric))
    value = run.data.metrics.get(metric) if metric else None
    crowned = crown_if_better(client, name, version.version, value, metric, mode)
    log.info("registered model %s version %s%s", name, version.version, f" ({CHAMPION})" if crowned else "")
    return version


def version_tags(run: Any, metric: str | None) -> dict[str, str]:
    """The run's own tags (not MLflow's internal ones, except the git commit) and its test metrics, plus
    ``optimized_metric``, whose value decides the champion."""
    tags = {
        key: value
        for key, value in run.data.tags.items()
        if (not key.startswith("mlflow.") or key == "mlflow.source.git.commit") and key not in PROCESS_TAGS
    }
    for key, value in run.data.metrics.items():
        if key.startswith("test/") or key == metric:
            tags[key] = repr(float(value))
    return tags


def crown_if_better(client: Any, name: str, version: str, value: float | None, metric: str | None, mode: str) -> bool:
    """Point ``champion`` at ``version`` when its ``value`` beats the champion's (``mode``: min or max), or when
    there is no champion; True when it did."""
    if mode not in ("min", "max"):
        raise ValueError(f"optimized_mode must be 'min' or 'max', got {mode!r}")
    champion = current_champion(client, name)
    if champion is not None:
        if value is None or math.isnan(value):
            log.warning(
                "model %s version %s has no %s: the champion stays version %s", name, version, metric, champion.version
            )
            return False
        best = float(champion.tags.get(metric, "nan")) if metric else math.nan
        beats = math.isnan(best) or (value < best if mode == "min" else value > best)
        if not beats:
            return False
    client.set_registered_model_alias(name, CHAMPION, version)
    return True


def current_champion(client: Any, name: str) -> Any:
    """The version holding the ``champion`` alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:  # no such alias (INVALID_PARAMETER_VALUE) or no such model yet
        if error.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise
