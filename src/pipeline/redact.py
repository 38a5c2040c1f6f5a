"""Secrets kept out of the record: everything the pipeline logs or writes passes through here first.

A tracking URI such as ``postgresql+psycopg://mlflow:<password>@db:5432/mlflow`` is part of
the composed config, so without this it would be logged verbatim as a param, inside the
``config.yaml`` artifact, in tags built from command-line overrides and in the run folder's
files, where everyone who can open the MLflow UI reads it. Redacted are:

- the password of every URL's user-info (``scheme://user:password@host`` → ``scheme://user:***@host``);
- the value of every config key named like a secret (``password``, ``token``, ``api_key``, ...).

``RedactSecrets`` (``hydra.callbacks`` in conf/train.yaml) applies the same rules to Hydra's own
files in the run folder (``.hydra/*.yaml``, a sweep's ``multirun.yaml``) and to every log
record, so the ``<task>.log`` file and the console never carry one either.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.atomic import atomic_open

MASK = "***"
# scheme://user:password@ — the password runs to the '@' (RFC 3986 percent-encodes '@', '/', '?', '#' in it).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?P<password>[^@/?#\s]+)@")
_SECRET_KEY = re.compile(r"(^|[_.\-/])(password|passwd|secret|token|api_?key|access_?key|credentials?)$",
                         re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda match: f"{match['head']}:{MASK}@", text)


def is_secret_key(key: str) -> bool:
    """Whether a config key names a secret (``password``, ``db_password``, ``api_key``, ``token``, ...)."""
    return bool(_SECRET_KEY.search(str(key)))


def redact(value: Any, key: str = "") -> Any:
    """A copy of plain config values (dicts, lists, strings) with every secret masked."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if is_secret_key(key) and value not in (None, ""):
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def redact_file(path: Path) -> None:
    """Rewrite a text file (atomically) when it holds a secret."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    clean = redact_text(text)
    clean = re.sub(r"(?m)^(\s*-?\s*[\w.\-/+]*?(?:password|passwd|secret|token|api_?key|access_?key)\s*[:=]\s*)\S.*$",
                   rf"\g<1>{MASK}", clean, flags=re.IGNORECASE)
    if clean != text:
        with atomic_open(path, "w") as fh:
            fh.write(clean)


class RedactingFilter(logging.Filter):
    """Masks URL passwords in every record that passes a handler (the console and the run's log file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def redact_logging() -> None:
    """Add the filter to every handler of the root logger (Hydra configures them per job); idempotent."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class RedactSecrets(Callback):
    """Hydra callback: redact the files Hydra wrote into the run (and sweep) folder, and every log line."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_logging()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_logging()
        hydra = HydraConfig.get()
        if hydra.output_subdir is not None:
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                redact_file(Path(hydra.runtime.output_dir) / hydra.output_subdir / name)
        if hydra.mode == RunMode.MULTIRUN:
            redact_file(Path(hydra.sweep.dir) / "multirun.yaml")
