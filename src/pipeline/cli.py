"""What every command-line entry point does before its work: find the configs, set up Hydra, report user errors.

Nothing happens at import: each ``main`` calls ``hydra_app`` (or, for a non-Hydra command,
``setup``), so importing ``pipeline.train`` in a notebook or a test changes no process state.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import PipelineError

T = TypeVar("T")

log = logging.getLogger(__name__)


def config_dir() -> str:
    """The Hydra config folder: ``./conf`` when run from a project root (as DVC and make do),
    else the ``conf/`` of the source tree this package was installed from (editable install)."""
    here = Path.cwd() / "conf"
    return str(here if here.is_dir() else Path(__file__).resolve().parents[2] / "conf")


def setup() -> None:
    """Register the config resolvers: ``${pid:}``, the process id, which with the microsecond in
    ``${now:}`` keeps apart the run folders of processes started at the same moment
    (conf/train.yaml's hydra.run.dir)."""
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True)


def hydra_app(task: Callable[[DictConfig], object], config_name: str) -> None:
    """Run ``task`` as a Hydra application on the project's ``config_name`` config (command-line overrides,
    ``-m`` sweeps). Hydra names the job (and its log file) after the module that defines ``task``."""
    setup()
    hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)(task)()


def report_user_errors(task: Callable[[], T]) -> T:
    """Run a stage; a user error (PipelineError) ends it with its message and exit code 1, not a traceback."""
    try:
        return task()
    except PipelineError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        sys.exit(1)
