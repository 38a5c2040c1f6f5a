"""Fetch files from a mirror or public URLs, verify their checksums, and write them atomically.

Sources are tried in order: the mirror (a local folder or a base URL, laid out as
``<mirror>/<folder>/<file>``), then each public base URL. A file only lands at its
destination once its checksum matches; otherwise nothing is left behind and the
error lists every source tried and why it failed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.errors import DataConfigError, DataFormatError, FetchError

log = logging.getLogger(__name__)

MIRROR_ENV = "PIPELINE_DATA_MIRROR"
_CHUNK = 1 << 20
_ALGORITHMS = ("sha256", "md5")


@dataclass(frozen=True)
class Checksum:
    """An expected digest: ``algorithm`` is ``md5`` or ``sha256``."""

    algorithm: str
    hexdigest: str

    def __post_init__(self) -> None:
        if self.algorithm not in _ALGORITHMS:
            raise DataConfigError(f"checksum algorithm {self.algorithm!r} is not one of {_ALGORITHMS}")

    def __str__(self) -> str:
        return f"{self.algorithm} {self.hexdigest}"


def optional_checksum(sha256: str | None, md5: str | None) -> Checksum | None:
    """A config's ``sha256`` (preferred) or ``md5``, if it gives one."""
    if sha256:
        return Checksum("sha256", sha256.lower())
    return Checksum("md5", md5.lower()) if md5 else None


def required_checksum(spec: Mapping[str, str], where: str) -> Checksum:
    """The ``sha256`` or ``md5`` a config block must give (``where`` names the block in the error)."""
    checksum = optional_checksum(spec.get("sha256"), spec.get("md5"))
    if checksum is None:
        raise DataConfigError(f"{where}: give the file's official checksum as `sha256` or `md5`")
    return checksum


def verify_checksum(path: Path, checksum: Checksum, shown: str | Path | None = None) -> None:
    """Refuse ``path`` unless its digest is ``checksum``; the error names ``shown`` (default: ``path``)."""
    actual = file_digest(path, checksum.algorithm)
    if actual != checksum.hexdigest:
        raise DataFormatError(f"{shown or path}: checksum mismatch: expected {checksum}, got {actual}")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks so large files never sit in memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_url(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in {"http", "https", "file", "ftp"}


def join_location(base: str, *parts: str) -> str:
    """Join a base URL or folder with path parts, whichever ``base`` is."""
    if is_url(base):
        return base.rstrip("/") + "/" + "/".join(urllib.parse.quote(p) for p in parts)
    return str(Path(base).joinpath(*parts))


def candidate_sources(name: str, folder: str, mirror: str | None, urls: Sequence[str]) -> list[str]:
    """Every location ``name`` may be fetched from, in the order they are tried."""
    sources = [join_location(mirror, folder, name)] if mirror else []
    sources += [join_location(base, name) for base in urls]
    return sources


class _SourceFailed(Exception):
    """One source could not deliver the file; the message says why, for the final report."""


def _copy_from(source: str, tmp: Path, timeout: float) -> None:
    """Copy ``source`` (folder path or URL) into ``tmp``; raise _SourceFailed on any failure."""
    if not is_url(source):
        path = Path(source)
        if not path.is_file():
            raise _SourceFailed("not found")
        shutil.copyfile(path, tmp)
        return
    try:
        with urllib.request.urlopen(source, timeout=timeout) as response, open(tmp, "wb") as out:
            expected = response.headers.get("Content-Length")
            received = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                received += len(chunk)
    except urllib.error.HTTPError as exc:
        raise _SourceFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _SourceFailed(f"unreachable ({exc.reason})") from exc
    except (OSError, ValueError) as exc:  # dropped connection, IncompleteRead, timeout
        raise _SourceFailed(f"transfer failed ({type(exc).__name__}: {exc})") from exc
    if expected is not None and received != int(expected):
        raise _SourceFailed(f"truncated: received {received} of {expected} bytes")


def fetch_file(
    name: str,
    dest_dir: Path,
    checksum: Checksum | None,
    *,
    folder: str,
    mirror: str | None = None,
    urls: Sequence[str] = (),
    timeout: float = 30.0,
) -> Path:
    """Put ``name`` in ``dest_dir`` from the first source whose copy has the expected checksum.

    A destination that already holds the right bytes is kept as it is (no download).
    Without a ``checksum`` (a user's own CSV by URL) the file is accepted as it comes and
    its sha256 is logged so the user can pin it in the config.
    """
    dest = dest_dir / name
    if checksum and dest.is_file() and file_digest(dest, checksum.algorithm) == checksum.hexdigest:
        log.info("%s: already present, checksum ok", dest)
        return dest
    sources = candidate_sources(name, folder, mirror, urls)
    if not sources:
        raise DataConfigError(
            f"{folder}/{name}: no source to fetch from: set a mirror ({MIRROR_ENV} or mirror=...) "
            "or list public base URLs in the dataset config's `urls`"
        )
    failures: list[str] = []
    for source in sources:
        try:
            # An exception leaving this block deletes the temporary file: no partial `dest`.
            with atomic_path(dest) as tmp:
                _copy_from(source, tmp, timeout)
                actual = file_digest(tmp, checksum.algorithm if checksum else "sha256")
                if checksum is None:
                    log.warning("%s: no checksum in the config; pin it with `sha256: %s`", name, actual)
                elif actual != checksum.hexdigest:
                    raise _SourceFailed(
                        f"checksum mismatch: expected {checksum.algorithm} {checksum.hexdigest}, got {actual}"
                    )
        except _SourceFailed as exc:
            log.warning("%s: %s from %s", name, exc, source)
            failures.append(f"  - {source}: {exc}")
            continue
        log.info("%s: fetched from %s", name, source)
        return dest
    tried = "\n".join(failures)
    raise FetchError(
        f"could not fetch {folder}/{name}: no source delivered "
        f"{'a file with ' + str(checksum) if checksum else 'the file'}.\n"
        f"Sources tried, in order:\n{tried}\n"
        f"Hint: when offline, point {MIRROR_ENV} (or the config key `mirror`) at a local folder or "
        f"base URL laid out as <mirror>/{folder}/{name}."
    )
