"""Pruning of Optuna trials: Optuna's own Lightning callback, bound to the trial the job runs.

In a search with a storage, the sweeper (``pipeline.search.sweeper``) tells each job which trial it
runs (``pipeline.studies``); this callback reports ``monitor`` to that trial after every validation
and raises ``optuna.TrialPruned`` when the study's pruner says so. Outside a search it does nothing,
so a preset can carry it always.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from optuna_integration import PyTorchLightningPruningCallback

from pipeline.studies import current_trial, make_pruner


class OptunaPruning(PyTorchLightningPruningCallback):
    """``PyTorchLightningPruningCallback`` for the trial of ``pipeline.studies.current_trial()``, if any."""

    def __init__(self, monitor: str) -> None:
        trial = current_trial(make_pruner(_sweeper_pruner()))
        self.active = trial is not None
        super().__init__(trial, monitor)  # unused when inactive

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            super().on_fit_start(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active:
            super().on_validation_end(trainer, pl_module)


def _sweeper_pruner() -> Any:
    """The job's ``hydra.sweeper.pruner``: the trial must be judged by the pruner the search runs with."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().sweeper.get("pruner")
