"""Extract a user- or URL-supplied archive (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``) without trusting it.

An archive from the internet can name members that land outside the folder it is extracted
into (``../x``, ``/etc/x``, a symlink to elsewhere), special files, or a few kilobytes that
unpack to terabytes. Every member is therefore checked before anything is written: tar
members through tarfile's ``data`` filter (PEP 706), zip members here (zipfile has no
filter), and both against a limit on their total declared size. The declared sizes bound
what is written: tarfile reads exactly a member's header size, and zipfile stops at a
member's ``file_size`` (a longer stream fails its CRC check). Absolute member names are
refused in both formats rather than silently made relative, as the data filter and
``zipfile.extract`` would: such an archive was not made to be unpacked into a folder.

Extraction goes into a temporary sibling folder renamed into place at the end, so a
refused or corrupt archive leaves no half-extracted destination.
"""

from __future__ import annotations

import gzip
import logging
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.atomic import atomic_dir
from pipeline.errors import DataFormatError

log = logging.getLogger(__name__)

SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
_MB = 1 << 20
# What a truncated or corrupt archive raises from the standard library while it is read.
_CORRUPT = (zipfile.BadZipFile, tarfile.ReadError, tarfile.CompressionError, gzip.BadGzipFile, EOFError, zlib.error)
_DRIVE = re.compile(r"^[A-Za-z]:")


def archive_kind(archive: Path) -> str:
    """``"zip"`` or ``"tar"``, from the file's suffix; anything else is refused."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    raise DataFormatError(f"{archive}: not a supported archive; expected a name ending in {', '.join(SUFFIXES)}")


def extract_archive(archive: Path, dest: Path, max_unpacked_bytes: int) -> Path:
    """Extract ``archive`` into ``dest`` (created, or replaced as a whole) and return ``dest``.

    Raises DataFormatError, and writes nothing at ``dest``, when the archive is of an unknown
    kind, corrupt, holds an unsafe member, or unpacks to more than ``max_unpacked_bytes``.
    """
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    if not archive.is_file():
        raise DataFormatError(f"{archive}: archive not found")
    try:
        with atomic_dir(dest) as tmp:
            if kind == "zip":
                _extract_zip(archive, tmp, max_unpacked_bytes)
            else:
                _extract_tar(archive, tmp, max_unpacked_bytes)
    except _CORRUPT as exc:
        raise DataFormatError(
            f"{archive}: corrupt or truncated {kind} archive ({type(exc).__name__}: {exc}); download it again"
        ) from exc
    log.info("%s: extracted into %s", archive, dest)
    return dest


def _check_total(archive: Path, total: int, limit: int) -> None:
    if total > limit:
        raise DataFormatError(
            f"{archive}: its members unpack to {total} bytes ({total / _MB:.1f} MB), over the limit of "
            f"{limit} bytes (max_unpacked_mb: {limit / _MB:g}); raise `max_unpacked_mb` in the config "
            "only for an archive you trust"
        )


def _is_absolute(name: str) -> bool:
    """A leading slash or backslash, or a drive letter: absolute on some OS, whichever this one is."""
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name))


def _refuse(archive: Path, name: str, why: str) -> DataFormatError:
    return DataFormatError(f"{archive}: member {name!r} {why}; refusing to extract the archive")


def _extract_zip(archive: Path, dest: Path, limit: int) -> None:
    """Check every member (name, type, encryption, total size) first; only then extract them all."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            name = info.filename
            if _is_absolute(name):
                raise _refuse(archive, name, "has an absolute path")
            # Windows reads a backslash as a separator: resolve the name as it would be there too.
            if not (root / PurePosixPath(name.replace("\\", "/"))).resolve().is_relative_to(root):
                raise _refuse(archive, name, "would be extracted outside the destination folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _refuse(archive, name, "is a symbolic link")
            if info.flag_bits & 0x1:
                raise _refuse(archive, name, "is encrypted")
        _check_total(archive, sum(info.file_size for info in members), limit)
        zf.extractall(dest)


def _extract_tar(archive: Path, dest: Path, limit: int) -> None:
    """Run tarfile's ``data`` filter over every member first, so an unsafe one is refused before any write."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:  # Python < 3.10.12 / 3.11.4: no safe way to extract a tar
        raise DataFormatError(
            f"{archive}: extracting tar archives safely needs tarfile's data filter "
            "(Python >= 3.10.12 or >= 3.11.4); upgrade Python or supply a .zip"
        )
    with tarfile.open(archive, "r:*") as tf:  # any compression, whatever the name says
        members = tf.getmembers()
        for member in members:
            if _is_absolute(member.name):
                raise _refuse(archive, member.name, "has an absolute path")
            # Images need no links, and links are where the data filter's known bypasses were (fixed only
            # in Python 3.11.13 and 3.12.11): refuse them all, as for zip files.
            if member.issym() or member.islnk():
                raise _refuse(archive, member.name, "is a link")
            try:
                data_filter(member, str(dest))
            except tarfile.FilterError as exc:
                raise _refuse(archive, member.name, f"is unsafe ({exc})") from exc
        _check_total(archive, sum(m.size for m in members if m.isfile()), limit)
        tf.extractall(dest, members=members, filter="data")
