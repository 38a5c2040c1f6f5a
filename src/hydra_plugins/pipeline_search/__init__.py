"""Registers ``hydra/sweeper=optuna`` (``pipeline.search.sweeper.OptunaSweeper``), its samplers
(``hydra/sweeper/sampler``: tpe, random, grid, cmaes, qmc, nsgaii) and pruners (``hydra/sweeper/pruner``:
median, hyperband, none) in Hydra's ConfigStore. Hydra imports every ``hydra_plugins`` package at start-up.

The keys are those of Hydra's Optuna sweeper plugin, plus ``pruner``.
"""

# ruff: noqa: UP006, UP045 - OmegaConf 2.3's structured configs take typing's List/Dict/Optional
# No `from __future__ import annotations`: OmegaConf reads the dataclass's annotations as types, and Hydra
# runs this module without registering it in sys.modules, where dataclasses would look string ones up.
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.pipeline_search.optuna_sweeper.OptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: str = "minimize"
    storage: Optional[str] = None
    study_name: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    params: Optional[Dict[str, str]] = None


SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 10, "multivariate": False},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "grid": {"_target_": "optuna.samplers.GridSampler", "_partial_": True},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None},
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": None},
    "nsgaii": {"_target_": "optuna.samplers.NSGAIISampler", "seed": None},
}
PRUNERS = {
    # Stop a trial whose best value so far is worse than the median of the complete trials at the same epoch.
    # Pruning starts once 2 trials are complete (Optuna's default of 5 leaves a course search of 12-20 trials
    # mostly unpruned), from the first epoch; raise either with hydra.sweeper.pruner.n_startup_trials=...
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 0},
    "hyperband": {
        "_target_": "optuna.pruners.HyperbandPruner",
        "min_resource": 1,
        "max_resource": "auto",
        "reduction_factor": 3,
    },
    "none": {"_target_": "optuna.pruners.NopPruner"},
}

store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="pipeline")
for name, node in SAMPLERS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="pipeline")
for name, node in PRUNERS.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="pipeline")
