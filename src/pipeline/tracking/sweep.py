"""Hydra multirun sweeps as MLflow parent/child runs, with the sweep's summary on the parent.

Hydra calls ``MlflowSweepCallback`` (``hydra.callbacks`` in conf/train.yaml) in the process
that launches the sweep, whatever the sweeper (grid, Optuna) or launcher (basic, joblib,
submitit). Before the first job it opens the parent run (``pipeline.tracking.run``, which
also makes each job's run a child of it). After the last job the parent gets:

- ``best/<metric>`` and ``best/<key>`` params: the best job's value of ``optimized_metric``
  (``optimized_mode``: min or max) and its swept overrides; tag ``best_run_id``;
- ``children.csv``: one row per job, its swept overrides, status and final metrics;
- ``seeds.csv`` for jobs that differ only in ``seed``: mean and standard deviation of each
  test metric per configuration; when the whole sweep is one configuration over seeds,
  also metrics ``<metric>/mean`` and ``<metric>/std`` on the parent.

A sweep whose parent cannot be opened stops before its first job (Hydra would run its jobs as
runs of no sweep). A sweep that stops on an error (a failed job ends Hydra's multirun) still
gets the summary of the jobs that ran, and its parent ends FAILED; a launching process killed
outright leaves the parent to ``pipeline.tracking.run.reap_dead_runs``. MLflow is imported only
when a sweep tracks: Hydra builds this callback for every run.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import json
import logging
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# A job's state on its sweep's parent (trials/<state>): MLflow's run statuses, and PRUNED from Optuna's tag.
JOB_STATES = ("FINISHED", "PRUNED", "FAILED", "KILLED", "RUNNING")


def mlflow_settings(config: DictConfig) -> tuple[str, str] | None:
    """(tracking URI, experiment name) of the config's MLflow logger; None when it has none."""
    logger = (config.get("logger") or {}).get("mlflow") if config.get("logger") else None
    if not logger or "_target_" not in logger:
        return None
    return str(logger.tracking_uri), str(logger.experiment_name)


class MlflowSweepCallback(Callback):
    """Opens the sweep's parent run before its jobs and summarises their runs into it afterwards."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = mlflow_settings(config)
        if settings is None:
            return
        from pipeline.redact import redact_text
        from pipeline.tracking.run import PARENT_RUN_ENV, SHARED_OVERRIDES_ENV

        cli_overrides = list(cast(list[str], OmegaConf.to_container(config.hydra.overrides.task)))
        inherited = os.environ.get(PARENT_RUN_ENV)
        try:
            run_id = open_parent(config, *settings, cli_overrides)
        except Exception as error:
            # Hydra turns a callback's error into a warning and runs the jobs anyway, as runs of no sweep and
            # no trial: stop before the first job instead.
            log.error(
                "the sweep's MLflow parent run could not be opened in %s (experiment %s): %s: %s",
                redact_text(settings[0]),
                settings[1],
                type(error).__name__,
                redact_text(str(error)),
            )
            self._end_half_opened(settings[0], inherited)
            raise SystemExit(1) from error
        os.environ[SHARED_OVERRIDES_ENV] = json.dumps(shared_overrides(cli_overrides))
        # Hydra calls on_multirun_end only when every job succeeded: otherwise this ends the parent.
        atexit.register(self._end_unfinished, config, run_id)
        log.info("MLflow parent run %s of sweep %s (experiment %s)", run_id, config.hydra.sweep.dir, settings[1])

    @staticmethod
    def _end_half_opened(uri: str, inherited: str | None) -> None:
        """A parent this sweep created before the error (a study's attribute then failed to save) ends FAILED
        now, not RUNNING until a later command reaps it."""
        from pipeline.tracking.run import PARENT_RUN_ENV, end_run

        run_id = os.environ.get(PARENT_RUN_ENV)
        if run_id and run_id != inherited:
            os.environ.pop(PARENT_RUN_ENV)
            with contextlib.suppress(Exception):  # the store that just failed may fail again: the error is logged
                end_run(uri, run_id, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(config, "FINISHED")

    def _end_unfinished(self, config: DictConfig, run_id: str) -> None:
        from pipeline.tracking.run import PARENT_RUN_ENV

        if os.environ.get(PARENT_RUN_ENV) == run_id:
            self._finish(config, "FAILED")

    def _finish(self, config: DictConfig, status: str) -> None:
        from pipeline.tracking.run import PARENT_RUN_ENV, SHARED_OVERRIDES_ENV, end_run, open_store

        run_id = os.environ.pop(PARENT_RUN_ENV, None)
        os.environ.pop(SHARED_OVERRIDES_ENV, None)
        settings = mlflow_settings(config)
        if run_id is None or settings is None:
            return
        metric, mode = config.get("optimized_metric"), config.get("optimized_mode", "min")
        try:
            summary = summarize_sweep(open_store(settings[0]), run_id, metric, mode)
            log.info("sweep summary (MLflow run %s): %s", run_id, summary)
            register_best(config, settings, summary.get("best_finished_run_id") if status == "FINISHED" else None)
        finally:
            end_run(settings[0], run_id, status)


def open_parent(config: DictConfig, uri: str, experiment: str, cli_overrides: list[str]) -> str:
    """The sweep's parent run, started (or, for a persistent Optuna study, the study's one, found again)."""
    from pipeline.tracking.provenance import git_state
    from pipeline.tracking.run import RUN_NAME_TAG, start_sweep_parent

    sweep_dir = str(config.hydra.sweep.dir)
    tags = {
        **git_state(config.paths.root_dir),
        RUN_NAME_TAG: f"sweep {os.path.basename(sweep_dir)}",
        "sweep.dir": sweep_dir,
        "sweep.overrides": " ".join(cli_overrides)[:5000],
        "sweep.sweeper": str(config.hydra.sweeper.get("_target_", "")),
        "sweep.launcher": str(config.hydra.launcher.get("_target_", "")),
    }
    study = persistent_study(config)
    return study_parent(uri, experiment, tags, *study) if study else start_sweep_parent(uri, experiment, tags)


def register_best(config: DictConfig, settings: tuple[str, str], best_run_id: str | None) -> None:
    """The sweep's best job's model as a new version of the configured registered model (once per sweep)."""
    from pipeline.tracking.registry import register_run_model, registered_name
    from pipeline.tracking.run import open_store

    logger = config.logger.mlflow
    name = registered_name(logger.get("registered_model_name"), settings[1], bool(config.get("register_model")))
    if not name or not best_run_id or not logger.get("pytorch_model", True):
        return
    client = open_store(settings[0])
    if client.search_model_versions(f"name = '{name}' and run_id = '{best_run_id}'"):
        return  # a persistent study's best, already registered by an earlier run or another worker
    mode = str(config.get("optimized_mode", "min"))
    try:
        register_run_model(settings[0], best_run_id, str(name), config.get("optimized_metric"), mode)
    except Exception:  # Hydra turns a callback's error into a warning: say it plainly
        log.exception("could not register the sweep's best model (run %s) as %s", best_run_id, name)


def persistent_study(config: DictConfig) -> tuple[str, str, Literal["minimize", "maximize"]] | None:
    """(storage, study name, direction) when the sweep is an Optuna study kept in a storage; None otherwise."""
    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("OptunaSweeper"):
        return None
    if not sweeper.get("storage") or not sweeper.get("study_name"):
        return None
    direction: Literal["minimize", "maximize"] = "maximize" if str(sweeper.direction) == "maximize" else "minimize"
    return str(sweeper.storage), str(sweeper.study_name), direction


def study_parent(
    uri: str,
    experiment: str,
    tags: Mapping[str, str],
    storage: str,
    study: str,
    direction: Literal["minimize", "maximize"],
) -> str:
    """The one parent run of a persistent study: created with the study, found again by every later run of
    it and by every other worker (the study's user attribute names it), so all its trials are its children."""
    from pipeline.studies import PARENT_RUN_ATTR, claim_study, parent_run_attr, wait_for_attr
    from pipeline.tracking.run import RUN_NAME_TAG, STUDY_TAG, open_store, resume_sweep_parent, start_sweep_parent

    optuna_study, created = claim_study(storage, study, direction)
    attr = parent_run_attr(uri)
    run_id = None if created else wait_for_attr(optuna_study, attr, timeout=0 if optuna_study.trials else 60)
    run_id = run_id or optuna_study.user_attrs.get(PARENT_RUN_ATTR)  # a study from before parents per store
    if run_id is not None and _run_is_active(open_store(uri), str(run_id)):
        log.info("continuing study %s: MLflow parent run %s", study, run_id)
        return resume_sweep_parent(uri, str(run_id))
    run_id = start_sweep_parent(uri, experiment, {**tags, STUDY_TAG: study, RUN_NAME_TAG: f"study {study}"})
    optuna_study.set_user_attr(attr, run_id)
    return run_id


def _run_is_active(client: Any, run_id: str) -> bool:
    """Whether the store has the run and it is not deleted (a user who deleted a study's parent in the UI,
    or for good with ``mlflow gc``, gets a new one on the study's next run)."""
    from mlflow.exceptions import MlflowException

    try:
        return bool(client.get_run(run_id).info.lifecycle_stage == "active")
    except MlflowException as error:  # gone for good; any other error (a server down, no access) is raised
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


def shared_overrides(cli_overrides: Sequence[str]) -> list[str]:
    """The command line's overrides that are not sweeps (``a=1`` but not ``b=1,2``): every job has them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(cli_overrides))
    return [text for text, override in zip(cli_overrides, parsed, strict=True) if not override.is_sweep_override()]


def summarize_sweep(client: Any, parent_run_id: str, metric: str | None, mode: str) -> dict[str, Any]:
    """Write the best job, the jobs table and the per-seed statistics onto the parent run; return the best."""
    if mode not in ("min", "max"):
        raise ValueError(f"optimized_mode must be 'min' or 'max', got {mode!r}")
    parent = client.get_run(parent_run_id)
    from pipeline.tracking.run import PARENT_TAG, STUDY_TAG

    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10000
    )
    jobs = [_job(run) for run in children]
    jobs.sort(key=lambda job: job["job"])
    swept = _swept_keys(jobs)
    client.log_text(parent_run_id, _csv(jobs, swept), "children.csv")
    # every state, zeros too: a summary rewritten later (a study's next worker) leaves no stale count behind
    seen = sorted({*JOB_STATES, *(job["status"] for job in jobs)})
    states = {state: sum(job["status"] == state for job in jobs) for state in seen}
    client.log_batch(parent_run_id, metrics=[_metric(f"trials/{s.lower()}", n) for s, n in states.items()])
    summary: dict[str, Any] = {"jobs": len(jobs), "states": states}
    best = _best(jobs, metric, mode)
    if best is not None:
        client.log_batch(parent_run_id, metrics=[_metric(f"best/{metric}", best["metrics"][metric])])
        best_values = {f"best/{key}": str(best["overrides"].get(key, "")) for key in swept}
        if STUDY_TAG in parent.data.tags:  # a study's parent is summarised again on every continuation:
            for key, value in best_values.items():  # tags, as params cannot change
                client.set_tag(parent_run_id, key, value)
        else:
            client.log_batch(parent_run_id, params=[_param(key, value) for key, value in best_values.items()])
        client.set_tag(parent_run_id, "best_run_id", best["run_id"])
        finished = _best([job for job in jobs if job["status"] == "FINISHED"], metric, mode)  # these logged a model
        summary.update(
            {
                "best_value": best["metrics"][metric],
                "best_run_id": best["run_id"],
                "best_params": {key: best["overrides"].get(key) for key in swept},
                "best_finished_run_id": finished["run_id"] if finished else None,
            }
        )
    groups = seed_groups(jobs, swept)
    if any(len(members) > 1 for members in groups.values()):
        client.log_text(parent_run_id, _seed_csv(groups, metric), "seeds.csv")
        if len(groups) == 1:
            (members,) = groups.values()
            stats = [
                _metric(f"{name}/{stat}", value)
                for name, (mean, std) in seed_statistics(members, metric).items()
                for stat, value in (("mean", mean), ("std", std))
            ]
            client.log_batch(parent_run_id, metrics=stats)
            summary["seeds"] = len(members)
    return summary


def _job(run: Any) -> dict[str, Any]:
    """A child run as a row: its job (an Optuna trial's number), status (PRUNED for a pruned trial), overrides."""
    from pipeline.tracking.run import OPTUNA_STATE_TAG, OPTUNA_TRIAL_TAG

    tags = run.data.tags
    overrides = dict(item.split("=", 1) for item in json.loads(tags.get("sweep.overrides", "[]")) if "=" in item)
    overrides = {key: value for key, value in overrides.items() if not key.startswith("+hydra.")}
    return {
        "job": int(tags.get(OPTUNA_TRIAL_TAG, tags.get("sweep.job", -1))),
        "run_id": run.info.run_id,
        "status": tags.get(OPTUNA_STATE_TAG, run.info.status),
        "overrides": overrides,
        "metrics": dict(run.data.metrics),
    }


def _swept_keys(jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The override keys whose values differ between jobs (what the sweep varied)."""
    keys = sorted({key for job in jobs for key in job["overrides"]})
    return [key for key in keys if len({job["overrides"].get(key) for job in jobs}) > 1]


def _best(jobs: Sequence[Mapping[str, Any]], metric: str | None, mode: str) -> Mapping[str, Any] | None:
    scored = [job for job in jobs if metric and math.isfinite(job["metrics"].get(metric, math.nan))]
    if not scored:
        return None
    choose = min if mode == "min" else max
    return choose(scored, key=lambda job: job["metrics"][metric])


def seed_groups(jobs: Sequence[Mapping[str, Any]], swept: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
    """Jobs grouped by their swept overrides other than ``seed``: each group is one config over seeds."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for job in jobs:
        key = tuple((k, job["overrides"].get(k)) for k in swept if k != "seed")
        groups.setdefault(key, []).append(job)
    return groups


def seed_statistics(members: Sequence[Mapping[str, Any]], metric: str | None) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation, over the members, of every test metric (and the optimised one)."""
    names = sorted({name for job in members for name in job["metrics"] if name.startswith("test/") or name == metric})
    stats = {}
    for name in names:
        values = [job["metrics"][name] for job in members if name in job["metrics"]]
        stats[name] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return stats


def _csv(jobs: Sequence[Mapping[str, Any]], swept: Sequence[str]) -> str:
    metrics = sorted({name for job in jobs for name in job["metrics"] if not name.startswith(("lr-", "epoch"))})
    rows = [
        [
            job["job"],
            job["run_id"],
            job["status"],
            *(job["overrides"].get(k, "") for k in swept),
            *(job["metrics"].get(name, "") for name in metrics),
        ]
        for job in jobs
    ]
    return _table(["job", "run_id", "status", *swept, *metrics], rows)


def _seed_csv(groups: Mapping[tuple, Sequence[Mapping[str, Any]]], metric: str | None) -> str:
    rows = []
    for key, members in groups.items():
        config = " ".join(f"{k}={v}" for k, v in key) or "(all jobs)"
        for name, (mean, std) in seed_statistics(members, metric).items():
            rows.append([config, len(members), name, mean, std])
    return _table(["config", "seeds", "metric", "mean", "std"], rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _metric(key: str, value: float) -> Any:
    import time

    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), 0)


def _param(key: str, value: str) -> Any:
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])
