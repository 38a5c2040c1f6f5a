"""Downloads against a real HTTP server on loopback: good, corrupt, missing, dropped and unreachable sources."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.data.download import Checksum, candidate_sources, fetch_file
from pipeline.errors import FetchError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: large enough to be sent in several chunks
GOOD = Checksum("md5", hashlib.md5(PAYLOAD).hexdigest())


def _serve(root: Path, rel: str, data: bytes = PAYLOAD) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetches_from_url_mirror_with_layout_mirror_folder_file(http_mirror, tmp_path):
    base, root = http_mirror
    _serve(root, "digits/file.bin")
    dest = fetch_file("file.bin", tmp_path / "out", GOOD, folder="digits", mirror=base)
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path / "out") == ["file.bin"]


def test_fetches_from_local_folder_mirror(tmp_path):
    _serve(tmp_path / "mirror", "digits/file.bin")
    dest = fetch_file("file.bin", tmp_path / "out", GOOD, folder="digits", mirror=str(tmp_path / "mirror"))
    assert dest.read_bytes() == PAYLOAD


def test_falls_back_from_mirror_to_public_urls_in_order(http_mirror, tmp_path, closed_port_url):
    base, root = http_mirror
    _serve(root, "public/file.bin")
    empty_mirror = tmp_path / "empty"
    empty_mirror.mkdir()
    dest = fetch_file(
        "file.bin",
        tmp_path / "out",
        GOOD,
        folder="digits",
        mirror=str(empty_mirror),
        urls=[closed_port_url, f"{base}/public/"],
    )
    assert dest.read_bytes() == PAYLOAD
    assert candidate_sources("f", "d", "/m", ["http://a/", "http://b"]) == ["/m/d/f", "http://a/f", "http://b/f"]


def test_corrupt_file_is_rejected_naming_expected_and_actual_checksum(http_mirror, tmp_path):
    base, root = http_mirror
    corrupt = bytearray(PAYLOAD)
    corrupt[1000] ^= 0xFF
    _serve(root, "digits/file.bin", bytes(corrupt))
    with pytest.raises(FetchError) as err:
        fetch_file("file.bin", tmp_path / "out", GOOD, folder="digits", mirror=base)
    message = str(err.value)
    assert "digits/file.bin" in message
    assert f"expected md5 {GOOD.hexdigest}, got {hashlib.md5(corrupt).hexdigest()}" in message
    assert f"{base}/digits/file.bin" in message
    assert _leftovers(tmp_path / "out") == []


def test_missing_file_404_lists_every_source_and_hints_at_the_mirror(http_mirror, tmp_path):
    base, _ = http_mirror
    with pytest.raises(FetchError) as err:
        fetch_file("file.bin", tmp_path / "out", GOOD, folder="digits", mirror=base, urls=[f"{base}/other/"])
    message = str(err.value)
    assert message.count("HTTP 404") == 2
    assert f"{base}/digits/file.bin" in message and f"{base}/other/file.bin" in message
    assert "PIPELINE_DATA_MIRROR" in message and "<mirror>/digits/file.bin" in message
    assert _leftovers(tmp_path / "out") == []


def test_connection_dropped_mid_file_leaves_no_partial_file(http_mirror, tmp_path):
    base, root = http_mirror
    _serve(root, "digits/file.bin")
    with pytest.raises(FetchError) as err:
        fetch_file("file.bin", tmp_path / "out", GOOD, folder="digits", urls=[f"{base}/drop/digits/"])
    message = str(err.value)
    assert "truncated" in message or "transfer failed" in message
    assert _leftovers(tmp_path / "out") == []


def test_unreachable_server_is_reported(tmp_path, closed_port_url):
    with pytest.raises(FetchError, match=r"unreachable \(.*[Cc]onnection refused"):
        fetch_file("file.bin", tmp_path / "out", GOOD, folder="digits", urls=[closed_port_url])
    assert _leftovers(tmp_path / "out") == []


def test_failed_refetch_keeps_nothing_but_a_good_file_is_not_downloaded_again(http_mirror, tmp_path):
    base, _ = http_mirror
    out = tmp_path / "out"
    out.mkdir()
    (out / "file.bin").write_bytes(PAYLOAD)  # already there, right checksum: no source needed at all
    assert fetch_file("file.bin", out, GOOD, folder="digits", mirror=base).read_bytes() == PAYLOAD
    (out / "file.bin").write_bytes(b"stale")  # wrong content and no source has it: fails, stale file untouched
    with pytest.raises(FetchError):
        fetch_file("file.bin", out, GOOD, folder="digits", mirror=base)
    assert _leftovers(out) == ["file.bin"] and (out / "file.bin").read_bytes() == b"stale"


def test_without_checksum_the_file_is_accepted_and_its_digest_logged(http_mirror, tmp_path, caplog):
    base, root = http_mirror
    _serve(root, "t.csv", b"a,b\n1,2\n")
    with caplog.at_level("WARNING"):
        fetch_file("t.csv", tmp_path / "out", None, folder="", urls=[base])
    assert hashlib.sha256(b"a,b\n1,2\n").hexdigest() in caplog.text
