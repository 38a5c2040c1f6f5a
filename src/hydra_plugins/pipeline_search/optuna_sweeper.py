"""Hydra accepts a sweeper only from the ``hydra_plugins`` package: this is ``pipeline.search.sweeper``'s.

Hydra imports every module of ``hydra_plugins`` at each start of every application, search or not,
so this one imports Optuna (about 0.6 s with the sweeper) only when a search builds its sweeper."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Hands everything to ``pipeline.search.sweeper.OptunaSweeper``, built from the same keys."""

    def __init__(self, **config: Any) -> None:
        from pipeline.search.sweeper import OptunaSweeper as Implementation

        self.sweeper = Implementation(**config)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
