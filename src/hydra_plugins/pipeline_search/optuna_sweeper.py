"""Hydra accepts a sweeper only from the ``hydra_plugins`` package: this is ``pipeline.search.sweeper``'s."""

from pipeline.search.sweeper import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """``pipeline.search.sweeper.OptunaSweeper``, where Hydra looks for sweepers."""
