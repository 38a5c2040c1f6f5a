"""Atomic file writes: an interrupted stage never leaves a file that looks complete.

Every output goes to a hidden temporary file in the destination folder first and is
renamed over the destination only once it is fully written and flushed; a rename
within one file system is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np


@functools.cache
def umask() -> int:
    """The process's umask, read once, at the first write: mkstemp/mkdtemp create private (0600/0700)
    entries, and outputs get the usual permissions instead. Linux reports it in /proc; elsewhere it
    is read by setting it, which is why this runs once and not at import."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it to ``dest`` on success, delete it on error."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(dest: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that becomes ``dest`` only when the block succeeds."""
    if mode not in {"w", "wb"}:
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(dest) as tmp:
        kwargs: dict[str, Any] = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def save_npy(dest: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write one array as ``.npy`` (memory-mappable later with ``np.load(mmap_mode='r')``)."""
    with atomic_open(dest, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def save_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON with sorted keys so identical content gives identical bytes (stable DVC hashes)."""
    with atomic_open(dest, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def save_csv(dest: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a header and rows as CSV (``\\n`` line ends on every OS)."""
    with atomic_open(dest, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest`` that replaces ``dest`` as a whole on success.

    A stage that writes several files into one output folder thus never leaves a folder
    holding some new files and some old (or missing) ones.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    old = dest.with_name(f".{dest.name}.old")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


SQLITE_PREFIX = "sqlite:///"


@contextlib.contextmanager
def sqlite_creation_lock(url: str) -> Iterator[None]:
    """The block run under a file lock beside the ``sqlite:///<file>`` database, its folder made first: MLflow
    and Optuna each create (and migrate) a new database in every process that opens it, and two processes
    doing so at once fail (``table studies already exists``, ``duplicate column name``)."""
    from filelock import FileLock

    database = Path(url.removeprefix(SQLITE_PREFIX))
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        yield
