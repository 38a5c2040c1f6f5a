"""A Hydra sweeper on Optuna 4: ``hydra/sweeper=optuna`` with the keys of Hydra's Optuna sweeper plugin.

Why not the plugin: hydra-optuna-sweeper 1.3 pins ``optuna<3``, whose database storage predates
SQLAlchemy 2 (so its studies could only live in memory), and its Optuna 4 successor is a
pre-release that needs a pre-release hydra-core. This sweeper keeps the plugin's keys and search
grammar (``pipeline.search.space``) and runs on Optuna's ask/tell API:

- ``storage`` (an RDB URL or ``journal:<file>``) and ``study_name``: the study is created once and
  continued by every later run and every other worker with the same pair; each run adds
  ``n_trials`` trials, asked ``n_jobs`` at a time of its launcher;
- ``pruner``: each job's ``OptunaPruning`` callback (``pipeline.callbacks.pruning``) reports to its
  trial, which this process then tells PRUNED, COMPLETE or FAIL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from pipeline.search.space import search_space, trial_overrides
from pipeline.studies import job_environment, make_pruner, open_storage
from pipeline.tracking.processes import is_alive, is_local, process_identity

WORKER_ATTR = "worker"  # a trial's user attribute: the process that asked for it (pipeline.tracking.processes)

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Runs ``n_trials`` trials of a (possibly shared, possibly continued) Optuna study as Hydra jobs."""

    def __init__(
        self,
        sampler: Any,
        direction: Literal["minimize", "maximize"],
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        params: DictConfig | None = None,
        pruner: Any = None,
        max_failure_rate: float = 0.0,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: expected minimize or maximize")
        self.sampler, self.pruner, self.direction = sampler, make_pruner(pruner), direction
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), max(int(n_jobs), 1), max_failure_rate
        self.params = cast(dict[str, Any], OmegaConf.to_container(params, resolve=True)) if params else {}
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.sampler_config = config.hydra.sweeper.get("sampler")
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        space, fixed = search_space({**self.params, **dict(a.split("=", 1) for a in arguments)})
        study = optuna.create_study(
            study_name=self.study_name,
            storage=open_storage(self.storage),
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        fail_dead_trials(study)
        study.sampler = self._sampler_for(len(study.trials))
        log.info(
            "Study %s (%s): %d earlier trials; running %d more, %d at a time",
            study.study_name,
            self.storage or "in memory",
            len(study.trials),
            self.n_trials,
            self.n_jobs,
        )
        failures = 0
        for start in range(0, self.n_trials, self.n_jobs):
            trials = [ask(study, space) for _ in range(min(self.n_jobs, self.n_trials - start))]
            returns = self.launcher.launch([self._job_overrides(study, t, fixed) for t in trials], self.job_idx)
            self.job_idx += len(returns)
            failures += sum(
                self._tell(study, trial, ret) == TrialState.FAIL for trial, ret in zip(trials, returns, strict=True)
            )
            if failures > self.max_failure_rate * self.n_trials:
                raise RuntimeError(
                    f"{failures} of the study's trials failed (hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate}); see the failed jobs' logs"
                )
        self._report(study)

    def _sampler_for(self, earlier: int) -> Any:
        """The configured sampler with its seed moved on by the study's earlier trials, so a continued study
        does not draw its first run's random points again. Workers started at the same moment see the same
        count: give each its own seed (``hydra.sweeper.sampler.seed=$SLURM_ARRAY_TASK_ID``)."""
        config = self.sampler_config
        if not earlier or config is None or config.get("seed") is None:
            return self.sampler
        return instantiate(config, seed=int(config.seed) + earlier)

    def _job_overrides(self, study: optuna.Study, trial: optuna.trial.Trial, fixed: dict[str, str]) -> Sequence[str]:
        overrides = trial_overrides(trial.params, fixed)
        if self.storage:  # the job's pruning callback finds its trial through these
            environment = job_environment(self.storage, study.study_name, trial.number)
            overrides += [f"+hydra.job.env_set.{key}='{value}'" for key, value in environment.items()]
        return overrides

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn) -> TrialState:
        """Record a job's outcome: its returned metric, PRUNED when its callback pruned it, FAIL otherwise."""
        if ret.status == JobStatus.COMPLETED and ret.return_value is not None:
            study.tell(trial, float(ret.return_value))
            return TrialState.COMPLETE
        state = TrialState.PRUNED if isinstance(ret._return_value, optuna.TrialPruned) else TrialState.FAIL
        if state == TrialState.FAIL:
            log.warning("trial %d failed: %s", trial.number, ret._return_value)
        study.tell(trial, state=state)
        return state

    def _report(self, study: optuna.Study) -> None:
        """Log the study's trial counts and best trial; write them to ``<sweep dir>/optimization_results.yaml``
        (the file Hydra's Optuna plugin wrote)."""
        counts = {state.name: sum(t.state == state for t in study.trials) for state in TrialState}
        log.info("Study %s: %s", study.study_name, ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n))
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "trials": counts}
        if counts["COMPLETE"]:
            best = study.best_trial
            log.info("Best trial %d: value %s, %s", best.number, best.value, best.params)
            results.update({"best_trial": best.number, "best_params": best.params, "best_value": best.value})
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")


def ask(study: optuna.Study, space: dict[str, Any]) -> optuna.trial.Trial:
    """A new trial of ``space``, marked with the process that runs it (so a later run can tell it died)."""
    trial = study.ask(space)
    trial.set_user_attr(WORKER_ATTR, process_identity())
    return trial


def fail_dead_trials(study: optuna.Study) -> None:
    """Mark FAIL the RUNNING trials whose worker process on this machine is gone (killed, crashed): a study
    continued after a crash then counts them as failed instead of running forever. Trials of workers on
    other machines are left alone: their process cannot be checked from here."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if worker and is_local(worker) and not is_alive(worker):
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning(
                "trial %d of study %s: its worker %s is gone; marked FAIL", trial.number, study.study_name, worker
            )
