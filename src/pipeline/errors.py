"""Every error a user can fix, in one place; entry points print its message without a traceback.

One class per area, so a caller can catch what it can handle. Each message names the file,
field or value at fault and what was expected.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate


class PipelineError(Exception):
    """A mistake in data, config or checkpoint: the root of every user error."""


class ConfigError(PipelineError, ValueError):
    """A config value of the wrong type or out of range (``pipeline.config_schema``)."""


class DataError(PipelineError):
    """A data problem the user can fix (bad source, bad file, bad config)."""


class FetchError(DataError):
    """No source delivered a file with the expected checksum."""


class DataFormatError(DataError):
    """A raw file does not have the format its dataset config declares."""


class DataConfigError(DataError):
    """A dataset config is missing a field or holds a value of the wrong kind."""


class ModelConfigError(PipelineError, ValueError):
    """The model config does not fit the data (shapes, classes) or the checkpoint."""


def build(config: Any, *, error: type[PipelineError] | None = None, where: str = "", **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with the user error (PipelineError) a built class raised let through
    as itself rather than wrapped in Hydra's InstantiationException, so its message reaches the user
    unchanged. Any other failure is raised as ``error(f"{where}: ...")`` when ``error`` is given."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, PipelineError):
            raise exc.__cause__ from None
        if error is None:
            raise
        raise error(f"{where}: {exc}") from exc
