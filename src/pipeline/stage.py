"""What the data-stage entry points share: the Hydra config, the dataset's folders, clean user errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pipeline.data.errors import DataConfigError, DataError
from pipeline.errors import PipelineError

if TYPE_CHECKING:  # imported by build_source: training and evaluation never build a source
    from pipeline.data.sources import Source

T = TypeVar("T")

log = logging.getLogger(__name__)


def project_config_dir() -> str:
    """The Hydra config folder: ``./conf`` when run from a project root (as DVC and make do),
    else the ``conf/`` of the source tree this package was installed from (editable install)."""
    here = Path.cwd() / "conf"
    return str(here if here.is_dir() else Path(__file__).resolve().parents[2] / "conf")


CONFIG_PATH = project_config_dir()


def register_resolvers() -> None:
    """``${pid:}``, the process id: with the microsecond in ``${now:}`` it keeps the run folders of
    processes started at the same moment apart (conf/train.yaml's hydra.run.dir)."""
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)


register_resolvers()


def dataset_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    """(raw, processed) folders of the dataset named by ``cfg.data.name``."""
    return Path(cfg.paths.raw_dir) / cfg.data.name, Path(cfg.paths.processed_dir) / cfg.data.name


def build_source(cfg: DictConfig) -> Source:
    """Instantiate ``data.source``; a config mistake surfaces as the DataError the source raised."""
    from pipeline.data.sources import Source

    try:
        source = instantiate(cfg.data.source)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, DataError):
            raise exc.__cause__ from None
        raise DataConfigError(f"data.source of dataset {cfg.data.name!r}: {exc}") from exc
    if not isinstance(source, Source):
        raise DataError(f"data.source._target_ {cfg.data.source._target_!r} is not a pipeline.data.sources.Source")
    return source


def instantiate_reporting_user_errors(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, re-raising a user error (PipelineError) of the built class as itself,
    not wrapped in Hydra's InstantiationException, so its message reaches the user unchanged."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, PipelineError):
            raise exc.__cause__ from None
        raise


def run_reporting_user_errors(task: Callable[[], T]) -> T:
    """Run a stage; a user error (PipelineError) ends it with its message and exit code 1, not a traceback."""
    try:
        return task()
    except PipelineError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        sys.exit(1)
