"""Secrets kept out of the record: everything the pipeline logs or writes passes through here first.

A tracking URI such as ``postgresql+psycopg://mlflow:<password>@db:5432/mlflow`` is part of
the composed config, so without this it would be logged verbatim as a param, inside the
``config.yaml`` artifact, in tags built from command-line overrides and in the run folder's
files, where everyone who can open the MLflow UI reads it. Redacted are:

- the password of every URL's user-info (``scheme://user:password@host`` → ``scheme://user:***@host``);
- the value of every config key named like a secret (``password``, ``token``, ``api_key``, ...),
  also where it is written ``key=value`` (an override) or ``key: value`` (a YAML line).

``RedactSecrets`` (``hydra.callbacks`` in conf/train.yaml) applies the same rules to Hydra's own
files in the run folder (``.hydra/*.yaml``, a sweep's ``multirun.yaml``) and to every log
record the process creates (a log-record factory: it outlives Hydra's reconfiguring of the
handlers and covers MLflow's and Lightning's own loggers), so the ``<task>.log`` file and the
console carry none either. What a library prints without logging is beyond its reach.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from pipeline.atomic import atomic_open

MASK = "***"
# scheme://user:password@ — the password runs to the token's last '@' (SQLAlchemy, which MLflow uses for
# database URIs, takes '/', '?' and '#' in a password as they are).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?P<password>\S*)@")
# Key names that hold secrets; a bare `token` too, but not tokenizer settings such as pad_token or eos_token.
_SECRET_KEY = re.compile(
    r"(?:(?:^|[_.\-/])(?:password|passwd|pwd|passphrase|secret|credentials?|(?:api|access|private|secret)_?key)"
    r"|(?:^|[.\-/])(?:token|(?:auth|access|api|bearer|refresh|session|hf|github)_token))$",
    re.IGNORECASE,
)
# `key=value` (an override) or `key: value` (a YAML line), the value on the same line.
_ASSIGNMENT = re.compile(r"(?P<key>[\w.+/\-]+)(?P<sep>=|:[ \t]+)(?P<value>[^\s,\]\"']+)")


def _mask_assignment(match: re.Match[str]) -> str:
    if not is_secret_key(match["key"].lstrip("+~")):
        return match[0]
    # YAML reads a bare *** as an alias: quoted after a colon, the file stays valid YAML
    return f"{match['key']}{match['sep']}{MASK if match['sep'] == '=' else repr(MASK)}"


def redact_text(text: str) -> str:
    """``text`` with the password of every URL, and the value of every ``secret_key=value``, replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda match: f"{match['head']}:{MASK}@", text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


def is_secret_key(key: str) -> bool:
    """Whether a config key names a secret (``password``, ``db_password``, ``api_key``, ``token``, ...)."""
    return bool(_SECRET_KEY.search(str(key)))


def redact(value: Any, key: str = "") -> Any:
    """A copy of plain config values (dicts, lists, strings) with every secret masked; everything under a
    secret-named key is masked whole."""
    if is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return redact_text(value) if isinstance(value, str) else value


def redact_file(path: Path) -> None:
    """Rewrite a text file (atomically) when it holds a secret; a YAML file stays valid YAML."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    clean = redact_text(text)
    if clean != text:
        with atomic_open(path, "w") as fh:
            fh.write(clean)


def _redacting_factory(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:  # tracebacks: formatters use exc_text when it is set
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return record

    make_record.redacting = True  # type: ignore[attr-defined]
    return make_record


def redact_logging() -> None:
    """Mask secrets in every log record this process creates, whatever its logger and handlers: Hydra
    replaces the handlers for each job, and MLflow's and Lightning's loggers have their own. Idempotent."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "redacting", False):
        logging.setLogRecordFactory(_redacting_factory(factory))


class RedactSecrets(Callback):
    """Hydra callback: redact the files Hydra wrote into the run (and sweep) folder, and every log line."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_logging()

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
