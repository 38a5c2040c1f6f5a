"""The ImageFolder source (folder, archive, URL, mirror; its config checks) and the preprocess stage on image
folders the tests write: solid 10×12 PNGs whose red and blue say the class and whose green numbers the image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.preparing import preprocess_dataset
from pipeline.data.processed import load_split, read_meta
from pipeline.data.sources import ImageFolder, build_source
from pipeline.errors import DataConfigError, DataFormatError, FetchError
from tests.test_archives import _tar, _zip
from tests.test_cifar import compose_config
from tests.test_image_folder import _write

CLASS_COLOURS = {"cat": (200, 40), "dog": (20, 220), "emu": (90, 120)}  # (red, blue); green numbers the image
COUNTS = {"cat": 7, "dog": 11, "emu": 14}
SPLIT = {"val_size": 0.2, "test_size": 0.25, "seed": 0}


def _images(root: Path, counts: dict[str, int], first: int = 0) -> dict[tuple[int, ...], str]:
    """Solid 10×12 (H×W) PNGs ``root/<class>/<NNN>.png``; returns {RGB colour: "class/file"}."""
    made = {}
    for name, n in counts.items():
        red, blue = CLASS_COLOURS[name]
        for i in range(first, first + n):
            _write(root / name / f"{i:03d}.png", size=(12, 10), color=(red, i, blue))
            made[(red, i, blue)] = f"{name}/{i:03d}.png"
    return made


def _members(root: Path) -> list[tuple[str, bytes]]:
    return [(p.relative_to(root).as_posix(), p.read_bytes()) for p in sorted(root.rglob("*.png"))]


def _archive(path: Path, root: Path) -> Path:
    """``root``'s images in a .zip or .tar.gz, under a wrapping folder as exported archives have."""
    members = [(f"export/{name}", data) for name, data in _members(root)]
    return (_zip if path.suffix == ".zip" else _tar)(path, members)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _ids(x: np.ndarray) -> list[tuple[int, ...]]:
    """Each image's colour (the images are solid, so their top-left pixel)."""
    return [tuple(int(v) for v in image[:, 0, 0]) for image in x]


def _preprocess(source: ImageFolder, raw: Path, out: Path, **split: object) -> dict:
    return preprocess_dataset(source, "imgs", "classification", raw, out, {**SPLIT, **split})


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[tuple[int, ...], str]]:
    """A flat class layout of 32 images (7 cat, 11 dog, 14 emu) and its colours."""
    return tmp_path / "imgs", _images(tmp_path / "imgs", COUNTS)


# Fetch


def test_fetch_copies_a_local_folder_and_a_second_fetch_replaces_it_as_a_whole(folder, tmp_path):
    root, _ = folder
    raw = tmp_path / "raw"
    ImageFolder([10, 12], path=str(root)).fetch(raw)
    assert _listing(raw / "images") == _listing(root) and len(_listing(root)) == 32
    other = tmp_path / "other"
    _images(other, {"emu": 1})
    ImageFolder([10, 12], path=str(other)).fetch(raw)
    assert _listing(raw / "images") == ["emu/000.png"]
    assert [p.name for p in raw.iterdir()] == ["images"]  # no temporary or old folder left


@pytest.mark.parametrize("name", ["imgs.zip", "imgs.tar.gz"])
def test_fetch_extracts_a_local_archive_whose_sha256_matches(folder, tmp_path, name):
    archive = _archive(tmp_path / name, folder[0])
    ImageFolder([10, 12], path=str(archive), sha256=_sha256(archive).upper()).fetch(tmp_path / "raw")
    assert _listing(tmp_path / "raw" / "images") == [f"export/{f}" for f in _listing(folder[0])]


@pytest.mark.parametrize("name", ["imgs.zip", "imgs.tar.gz"])
def test_a_wrong_sha256_fails_naming_expected_and_actual_and_extracts_nothing(folder, tmp_path, name):
    archive = _archive(tmp_path / name, folder[0])
    source = ImageFolder([10, 12], path=str(archive), sha256="ab" * 32)
    with pytest.raises(DataFormatError, match="checksum mismatch") as err:
        source.fetch(tmp_path / "raw")
    assert f"expected sha256 {'ab' * 32}, got {_sha256(archive)}" in str(err.value)
    assert name in str(err.value) and not (tmp_path / "raw" / "images").exists()


def test_fetch_downloads_a_url_checks_its_sha256_and_removes_the_archive(folder, tmp_path, http_mirror):
    base, served = http_mirror
    archive = _archive(served / "imgs.tar.gz", folder[0])
    raw = tmp_path / "raw"
    ImageFolder([10, 12], url=f"{base}/imgs.tar.gz", sha256=_sha256(archive)).fetch(raw)
    assert [p.name for p in raw.iterdir()] == ["images"]
    assert len(_listing(raw / "images")) == 32
    with pytest.raises(FetchError, match="checksum mismatch: expected sha256 0000"):
        ImageFolder([10, 12], url=f"{base}/imgs.tar.gz", sha256="0" * 64).fetch(tmp_path / "raw2")
    assert not (tmp_path / "raw2" / "images").exists()


def test_with_folder_set_the_mirror_is_tried_first_and_only_then(folder, tmp_path, http_mirror, closed_port_url):
    base, served = http_mirror
    (served / "shared").mkdir()
    archive = _archive(served / "shared" / "imgs.zip", folder[0])
    url, digest = closed_port_url + "imgs.zip", _sha256(archive)
    ImageFolder([10, 12], url=url, sha256=digest, folder="shared").fetch(tmp_path / "raw", mirror=base)
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["images"]
    assert len(_listing(tmp_path / "raw" / "images")) == 32
    with pytest.raises(FetchError, match="unreachable"):  # without `folder` the mirror is not looked at
        ImageFolder([10, 12], url=url, sha256=digest).fetch(tmp_path / "raw2", mirror=base)


@pytest.mark.parametrize("name", ["evil.zip", "evil.tar.gz"])
def test_an_archive_entry_climbing_out_is_refused_through_the_source(tmp_path, name):
    members = [("a/1.png", b"x"), ("../evil.png", b"pwned")]
    archive = (_zip if name.endswith(".zip") else _tar)(tmp_path / name, members)
    with pytest.raises(DataFormatError, match=r"member '\.\./evil\.png' .*outside the destination"):
        ImageFolder([10, 12], path=str(archive)).fetch(tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []  # no images, no raw/evil.png, no temporary folder


def test_max_unpacked_mb_refuses_an_archive_that_unpacks_to_more(folder, tmp_path):
    archive = _archive(tmp_path / "imgs.zip", folder[0])
    with pytest.raises(DataFormatError, match=r"over the limit of 1 bytes \(max_unpacked_mb: "):
        ImageFolder([10, 12], path=str(archive), max_unpacked_mb=1e-6).fetch(tmp_path / "raw")
    assert not (tmp_path / "raw" / "images").exists()


# Config errors, each naming the key


@pytest.mark.parametrize("where", [{}, {"path": "imgs", "url": "https://example.org/imgs.zip"}])
def test_exactly_one_of_path_and_url(where):
    with pytest.raises(DataConfigError, match=r"exactly one of `path` .* or `url`"):
        ImageFolder([10, 12], **where)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"channels": 2}, "source.channels=2"),
        ({"image_size": [0, 5]}, "source.image_size="),
        ({"image_size": [32]}, "source.image_size="),
    ],
)
def test_channels_and_image_size_are_checked(kwargs, key):
    with pytest.raises(DataConfigError, match=key):
        ImageFolder(**{"image_size": [10, 12], "path": "imgs", **kwargs})


@pytest.mark.parametrize("name", ["notes.txt", "no_such_folder", "no_such.zip"])
def test_a_path_that_is_no_folder_nor_archive_names_it_and_the_key(tmp_path, name):
    (tmp_path / "notes.txt").write_text("not images")
    with pytest.raises(DataFormatError) as err:
        ImageFolder([10, 12], path=str(tmp_path / name)).fetch(tmp_path / "raw")
    assert name in str(err.value) and "`path`" in str(err.value)


# Preprocess on a flat class layout


@pytest.mark.parametrize(("val", "test", "sizes"), [(0.2, 0.25, (18, 6, 8)), (5, 6, (21, 5, 6))])
def test_splits_have_the_asked_sizes_and_each_class_its_share(folder, tmp_path, val, test, sizes):
    source = ImageFolder([10, 12], path=str(folder[0]))
    source.fetch(tmp_path / "raw")
    meta = _preprocess(source, tmp_path / "raw", tmp_path / "out", val_size=val, test_size=test)
    assert tuple(meta["splits"][s]["n"] for s in ("train", "val", "test")) == sizes
    shares = np.array(list(COUNTS.values())) / sum(COUNTS.values())
    for name, n in zip(("train", "val", "test"), sizes, strict=True):
        counts = np.bincount(load_split(tmp_path / "out", name)[1], minlength=3)
        assert np.abs(counts - shares * n).max() <= 1, (name, counts.tolist())


def test_splits_are_seeded(folder, tmp_path):
    source = ImageFolder([10, 12], path=str(folder[0]))
    source.fetch(tmp_path / "raw")
    chosen = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        _preprocess(source, tmp_path / "raw", tmp_path / run, seed=seed)
        chosen[run] = {s: _ids(load_split(tmp_path / run, s)[0]) for s in ("train", "val", "test")}
    assert chosen["a"] == chosen["b"]
    assert chosen["a"]["test"] != chosen["c"]["test"]
    assert sorted(i for split in chosen["c"].values() for i in split) == sorted(
        folder[1]
    )  # every image once, in some split


@pytest.mark.parametrize("channels", [1, 3])
def test_arrays_labels_and_meta_describe_the_images(folder, tmp_path, channels):
    root, colours = folder
    source = ImageFolder([5, 7], channels=channels, path=str(root))
    source.fetch(tmp_path / "raw")
    _preprocess(source, tmp_path / "raw", tmp_path / "out")
    meta = read_meta(tmp_path / "out")
    assert meta["kind"] == "image" and meta["class_names"] == ["cat", "dog", "emu"]
    assert meta["input_shape"] == [channels, 5, 7]
    grey = {c: Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0)) for c in colours}
    for split in ("train", "val", "test"):
        x, y = load_split(tmp_path / "out", split)
        assert x.dtype == np.uint8 and x.shape == (len(y), channels, 5, 7) and y.dtype == np.int64
        assert (x == x[:, :, :1, :1]).all()  # solid colours stay solid through the resize
        for pixel, label in zip(_ids(x), y, strict=True):
            folders = {f.split("/")[0] for c, f in colours.items() if (c if channels == 3 else (grey[c],)) == pixel}
            assert folders == {meta["class_names"][label]}
        assert meta["class_counts"][split] == np.bincount(y, minlength=3).tolist()
    train = load_split(tmp_path / "out", "train")[0].astype(np.float64) / 255
    np.testing.assert_allclose(meta["normalization"]["mean"], train.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(meta["normalization"]["std"], train.std(axis=(0, 2, 3)), rtol=0, atol=1e-12)


def test_a_class_with_too_few_images_to_stratify_is_a_config_error(tmp_path):
    _images(tmp_path / "imgs", {"cat": 6, "dog": 1})
    source = ImageFolder([10, 12], path=str(tmp_path / "imgs"))
    source.fetch(tmp_path / "raw")
    with pytest.raises(DataConfigError, match=r"preprocess\.test_size"):
        _preprocess(source, tmp_path / "raw", tmp_path / "out", val_size=1, test_size=2)
    assert not (tmp_path / "out").exists()


def test_official_train_and_test_folders_keep_test_and_carve_val_out_of_train(tmp_path):
    train = _images(tmp_path / "imgs" / "train", {"cat": 6, "dog": 6})
    test = _images(tmp_path / "imgs" / "test", {"cat": 2, "dog": 3}, first=100)
    source = ImageFolder([10, 12], path=str(tmp_path / "imgs"))
    source.fetch(tmp_path / "raw")
    meta = _preprocess(source, tmp_path / "raw", tmp_path / "out", val_size=0.25, test_size=0.5)
    x, y = load_split(tmp_path / "out", "test")
    assert [test[c] for c in _ids(x)] == list(test.values()) and y.tolist() == [0, 0, 1, 1, 1]
    assert meta["splits"]["val"]["n"] == 3 and meta["splits"]["train"]["n"] == 9
    carved = _ids(load_split(tmp_path / "out", "train")[0]) + _ids(load_split(tmp_path / "out", "val")[0])
    assert sorted(carved) == sorted(train)


def test_max_images_per_class_keeps_the_first_files_by_name(tmp_path):
    for i, name in enumerate(["b.png", "a.png", "c10.png", "c2.png", "0.png"]):
        _write(tmp_path / "imgs" / "cat" / name, size=(12, 10), color=(200, i, 40))
        _write(tmp_path / "imgs" / "dog" / name, size=(12, 10), color=(20, i, 220))
    source = ImageFolder([10, 12], path=str(tmp_path / "imgs"), max_images_per_class=3)
    source.fetch(tmp_path / "raw")
    _preprocess(source, tmp_path / "raw", tmp_path / "out", val_size=2, test_size=2)
    kept = [i for s in ("train", "val", "test") for i in _ids(load_split(tmp_path / "out", s)[0])]
    first = [4, 1, 0]  # 0.png, a.png, b.png
    assert sorted(kept) == sorted([(200, i, 40) for i in first] + [(20, i, 220) for i in first])


def _zero_byte(file: Path) -> None:
    file.write_bytes(b"")


def _truncated(file: Path) -> None:
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(file)
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


@pytest.mark.parametrize(("spoil", "says"), [(_zero_byte, r"an empty file \(0 bytes\)"), (_truncated, "truncated")])
def test_a_broken_image_fails_naming_it_and_writes_no_output(folder, tmp_path, spoil, says):
    spoil(folder[0] / "dog" / "broken.png")
    source = ImageFolder([10, 12], path=str(folder[0]))
    source.fetch(tmp_path / "raw")
    (tmp_path / "processed").mkdir()
    with pytest.raises(DataFormatError, match=rf"dog/broken\.png: .*{says}"):
        _preprocess(source, tmp_path / "raw", tmp_path / "processed" / "imgs")
    assert list((tmp_path / "processed").iterdir()) == []  # neither the output nor a temporary sibling


def test_regression_on_an_image_folder_is_refused(folder, tmp_path):
    source = ImageFolder([10, 12], path=str(folder[0]))
    source.fetch(tmp_path / "raw")
    with pytest.raises(DataConfigError, match=r"data\.task='regression': image datasets are classification"):
        preprocess_dataset(source, "imgs", "regression", tmp_path / "raw", tmp_path / "out", SPLIT)
    assert not (tmp_path / "out").exists()


# Through Hydra


def test_the_my_images_template_builds_an_image_folder_with_its_defaults(folder):
    cfg = compose_config("prepare", "data=my_images", f"data.source.path={folder[0]}")
    source = build_source(cfg.data.source, cfg.data.name)
    assert isinstance(source, ImageFolder) and source.path == str(folder[0])
    assert (source.image_size, source.channels, source.url) == ((32, 32), 3, None)
    assert source.max_images_per_class is None and source.max_unpacked_bytes == 2048 * 2**20
    assert cfg.data.preprocess.val_size == 0.15 and cfg.data.task == "classification"
