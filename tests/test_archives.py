"""Safe extraction of untrusted archives: each unsafe or broken archive is refused by name, writing nothing."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline.data.archives import extract_archive
from pipeline.errors import DataFormatError

LIMIT = 1 << 20


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """A tar (gzipped when the name says so) of (name, content) files and ready-made TarInfo entries."""
    with tarfile.open(path, "w:gz" if path.name.endswith((".gz", ".tgz")) else "w") as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, members: list[zipfile.ZipInfo | tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member in members:
            if isinstance(member, zipfile.ZipInfo):
                zf.writestr(member, b"/etc/passwd")
            else:
                zf.writestr(*member)
    return path


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _refused(archive: Path, dest: Path, *expected: str, limit: int = LIMIT) -> str:
    """Extraction fails naming ``expected``; the folder holding archive and dest is as it was."""
    before = sorted(p.relative_to(archive.parent.parent) for p in archive.parent.parent.rglob("*"))
    with pytest.raises(DataFormatError) as err:
        extract_archive(archive, dest, limit)
    message = str(err.value)
    for text in (str(archive), *expected):
        assert text in message
    assert not dest.exists()
    assert sorted(p.relative_to(archive.parent.parent) for p in archive.parent.parent.rglob("*")) == before
    return message


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """``tmp_path/work``: the archive's and dest's folder, one level below tmp_path so ``../evil`` stays in sight."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def test_good_tar_gz_and_zip_extract_to_the_expected_tree(folder):
    files = [("data/a.csv", b"x,y\n1,2\n"), ("data/sub/b.txt", b"hello"), ("readme.md", b"# r")]
    for archive in (_tar(folder / "good.tar.gz", list(files)), _zip(folder / "good.zip", list(files))):
        dest = folder / f"out_{archive.name}"
        assert extract_archive(archive, dest, LIMIT) == dest
        assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [n for n, _ in files]
        assert (dest / "data" / "sub" / "b.txt").read_bytes() == b"hello"
        assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_extracting_again_replaces_the_folder_as_a_whole(folder):
    dest = folder / "out"
    extract_archive(_tar(folder / "one.tar", [("old.txt", b"1")]), dest, LIMIT)
    extract_archive(_tar(folder / "two.tar", [("new.txt", b"2")]), dest, LIMIT)
    assert [p.name for p in dest.iterdir()] == ["new.txt"]


def test_tar_member_climbing_out_is_refused(folder):
    archive = _tar(folder / "evil.tar.gz", [("ok.txt", b"fine"), ("../evil", b"pwned")])
    _refused(archive, folder / "out", "'../evil'", "outside the destination")
    assert not (folder.parent / "evil").exists()


def test_tar_member_with_an_absolute_path_is_refused(folder):
    archive = _tar(folder / "abs.tar", [(str(folder.parent / "abs_evil"), b"pwned")])
    _refused(archive, folder / "out", str(folder.parent / "abs_evil"), "absolute path")
    assert not (folder.parent / "abs_evil").exists()


def test_tar_links_are_refused_even_inside(folder):
    archive = _tar(folder / "inner.tgz", [("a/file", b"x"), _symlink("a/link", "file")])
    _refused(archive, folder / "out", "'a/link'", "is a link")


def test_tar_symlink_pointing_outside_is_refused(folder):
    archive = _tar(folder / "link.tgz", [_symlink("link", "../../outside"), ("link/file", b"through the link")])
    _refused(archive, folder / "out", "'link'", "is a link")


def test_tar_device_file_is_refused(folder):
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    _refused(_tar(folder / "dev.tar", [device]), folder / "out", "'dev'", "special file")


def test_zip_member_climbing_out_is_refused(folder):
    archive = _zip(folder / "evil.zip", [("ok.txt", b"fine"), ("../evil", b"pwned")])
    _refused(archive, folder / "out", "'../evil'", "outside the destination")
    assert not (folder.parent / "evil").exists()
    archive = _zip(folder / "evil_win.zip", [("a\\..\\..\\evil", b"pwned")])  # Windows separators
    _refused(archive, folder / "out", "'a\\\\..\\\\..\\\\evil'", "outside the destination")


@pytest.mark.parametrize("name", ["/tmp/abs_evil", "\\abs_evil", "C:/abs_evil", "c:\\abs_evil"])
def test_zip_member_with_an_absolute_name_is_refused(folder, name):
    archive = _zip(folder / "abs.zip", [("ok.txt", b"fine"), (name, b"pwned")])
    _refused(archive, folder / "out", repr(name), "absolute path")


def test_zip_symlink_member_is_refused(folder):
    archive = _zip(folder / "link.zip", [("ok.txt", b"fine"), _zip_symlink("link")])
    _refused(archive, folder / "out", "'link'", "symbolic link")


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_unpacking_over_the_limit_is_refused(folder, suffix):
    zeros = [("zeros1.bin", bytes(LIMIT // 2 + 1)), ("zeros2.bin", bytes(LIMIT // 2))]
    archive = (_zip if suffix == ".zip" else _tar)(folder / f"bomb{suffix}", zeros)
    assert archive.stat().st_size < LIMIT // 50  # small on disk, large unpacked
    message = _refused(archive, folder / "out", f"{LIMIT + 1} bytes", f"limit of {LIMIT} bytes", "max_unpacked_mb")
    assert "max_unpacked_mb: 1" in message


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ".tar"])
def test_truncated_archive_is_refused_as_corrupt(folder, suffix):
    files = [(f"f{i}.bin", bytes(range(256)) * 64 * (i + 1)) for i in range(4)]
    archive = (_zip if suffix == ".zip" else _tar)(folder / f"whole{suffix}", files)
    broken = folder / f"broken{suffix}"
    broken.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    archive.unlink()
    _refused(broken, folder / "out", "corrupt or truncated")


def test_a_file_that_is_no_archive_is_refused(folder):
    text = folder / "notes.zip"
    text.write_text("not a zip at all")
    _refused(text, folder / "out", "corrupt or truncated zip")


def test_unknown_suffix_is_refused_naming_the_expected_ones(folder):
    archive = folder / "data.rar"
    archive.write_bytes(b"Rar!")
    _refused(archive, folder / "out", ".zip, .tar, .tar.gz, .tgz")
