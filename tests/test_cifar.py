"""CIFAR-10 from an archive in the official format: fetch, load, preprocess, the restricted unpickler, and the
Keras-example preset."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from pipeline.data.cifar import Cifar10
from pipeline.data.preparing import preprocess_dataset
from pipeline.data.processed import load_split, read_meta
from pipeline.errors import DataFormatError, FetchError
from tests.conftest import REPO_ROOT

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 4  # images per data batch: 5 batches make 20 training images, two of each class
ARCHIVE = "cifar-10-python.tar.gz"


def official_batches(seed: int = 0) -> dict[str, dict[bytes, Any]]:
    """The batches of a tiny CIFAR-10, as the official files hold them: dicts with bytes keys, N×3072 uint8 data."""
    rng = np.random.default_rng(seed)
    batches: dict[str, dict[bytes, Any]] = {}
    for i, name in enumerate([*(f"data_batch_{b}" for b in range(1, 6)), "test_batch"]):
        labels = [(i * PER_BATCH + k) % 10 for k in range(PER_BATCH)]
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        batches[name] = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": []}
    batches["batches.meta"] = {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    return batches


def write_archive(path: Path, batches: dict[str, Any]) -> Path:
    """``cifar-10-batches-py/<name>`` per batch, pickled with protocol 2, in a .tar.gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        tf.addfile(folder)
        for name, batch in batches.items():
            data = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def compose_config(name: str, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, dict[str, dict[bytes, Any]], str]:
    """(mirror folder holding cifar10/cifar-10-python.tar.gz, its batches, the archive's md5)."""
    batches = official_batches()
    archive = write_archive(tmp_path / "mirror" / "cifar10" / ARCHIVE, batches)
    return tmp_path / "mirror", batches, md5(archive)


def configured_source(md5_hex: str) -> Cifar10:
    """The source of conf/data/cifar10.yaml, with the tiny archive's md5 in place of the official one."""
    cfg = compose_config("prepare", "data=cifar10", f"data.source.archive.md5={md5_hex}")
    source = instantiate(cfg.data.source)
    assert isinstance(source, Cifar10)
    return source


def test_fetch_from_a_folder_mirror_then_load_gives_planes_in_rgb_order(mirror, tmp_path):
    root, batches, md5_hex = mirror
    source = configured_source(md5_hex)
    source.fetch(tmp_path / "raw", mirror=str(root))
    assert [p.name for p in (tmp_path / "raw").iterdir()] == [ARCHIVE]  # kept compressed, nothing extracted
    data = source.load(tmp_path / "raw")
    assert data.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (PER_BATCH, 3, 32, 32) and data.test_y.dtype == np.int64
    first = batches["data_batch_1"][b"data"][0]
    image = data.train_x[0]
    # a row is the red plane, then green, then blue, each 32×32 row-major
    assert (image[0, 0, 0], image[1, 0, 0], image[2, 0, 0]) == (first[0], first[1024], first[2048])
    assert image[0, 0, 1] == first[1] and image[0, 1, 0] == first[32] and image[2, 31, 31] == first[3071]
    np.testing.assert_array_equal(data.train_x[PER_BATCH], batches["data_batch_2"][b"data"][0].reshape(3, 32, 32))
    np.testing.assert_array_equal(data.train_y, np.arange(5 * PER_BATCH) % 10)
    np.testing.assert_array_equal(data.test_x.reshape(PER_BATCH, -1), batches["test_batch"][b"data"])
    assert data.class_names == CLASSES


def test_class_names_default_to_batches_meta(mirror, tmp_path):
    root, _, md5_hex = mirror
    source = Cifar10(folder="cifar10", archive={"name": ARCHIVE, "md5": md5_hex})
    source.fetch(tmp_path / "raw", mirror=str(root))
    assert source.load(tmp_path / "raw").class_names == CLASSES


def test_tampered_archive_fails_the_checksum_at_fetch_and_at_load(mirror, tmp_path):
    root, batches, md5_hex = mirror
    source = configured_source(md5_hex)
    source.fetch(tmp_path / "raw", mirror=str(root))
    batches["test_batch"][b"labels"][0] = 9
    tampered = write_archive(tmp_path / "tampered" / "cifar10" / ARCHIVE, batches)
    with pytest.raises(FetchError, match=f"expected md5 {md5_hex}, got {md5(tampered)}"):
        source.fetch(tmp_path / "raw2", mirror=str(tmp_path / "tampered"), timeout=1)
    (tmp_path / "raw" / ARCHIVE).write_bytes(tampered.read_bytes())
    with pytest.raises(DataFormatError, match=f"{ARCHIVE}: checksum mismatch: expected md5 {md5_hex}"):
        source.load(tmp_path / "raw")


class _RunsCode:
    """Pickles as a call of ``function(argument)``: what a malicious batch would hold."""

    def __init__(self, function: Any, *arguments: str) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self) -> tuple[Any, tuple[str, ...]]:
        return self.function, self.arguments


# protocol 2 names Python 3's builtins module as Python 2's __builtin__
@pytest.mark.parametrize(
    ("function", "named"), [(os.system, f"{os.system.__module__}.system"), (eval, "__builtin__.eval")]
)
def test_a_pickle_naming_any_other_global_is_refused_without_running_it(tmp_path, function, named):
    marker = tmp_path / "ran"
    command = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    batches = official_batches()
    batches["test_batch"][b"labels"] = _RunsCode(function, command)
    archive = write_archive(tmp_path / "raw" / ARCHIVE, batches)
    source = Cifar10(folder="cifar10", archive={"name": ARCHIVE, "md5": md5(archive)}, class_names=CLASSES)
    with pytest.raises(DataFormatError) as err:
        source.load(tmp_path / "raw")
    message = str(err.value)
    assert f"{archive}:cifar-10-batches-py/test_batch" in message
    assert f"asks for {named}; refused" in message
    assert not marker.exists()


def test_codecs_encode_is_allowed_for_latin1_only(tmp_path):
    import codecs

    batches = official_batches()
    batches["batches.meta"][b"label_names"] = _RunsCode(codecs.encode, "text", "rot13")
    archive = write_archive(tmp_path / "raw" / ARCHIVE, batches)
    source = Cifar10(folder="cifar10", archive={"name": ARCHIVE, "md5": md5(archive)})
    with pytest.raises(DataFormatError, match=r"batches\.meta: not a readable pickle .*only latin1"):
        source.load(tmp_path / "raw")


@pytest.mark.parametrize(
    ("batch", "change", "expected"),
    [
        ("data_batch_3", {b"data": np.zeros((PER_BATCH, 3000), np.uint8)}, r"shape N×3072, got uint8 array"),
        ("data_batch_2", {b"labels": [0, 1]}, r"should be 4 integers \(one per image\)"),
        ("test_batch", {b"labels": [0, 1, 2, 10]}, r"label 10 is out of range for the 10 class names"),
    ],
)
def test_malformed_batches_are_named(tmp_path, batch, change, expected):
    batches = official_batches()
    batches[batch].update(change)
    archive = write_archive(tmp_path / "raw" / ARCHIVE, batches)
    source = Cifar10(folder="cifar10", archive={"name": ARCHIVE, "md5": md5(archive)}, class_names=CLASSES)
    with pytest.raises(DataFormatError, match=f"cifar-10-batches-py/{batch}: .*{expected}"):
        source.load(tmp_path / "raw")


def test_missing_batch_is_named(tmp_path):
    batches = official_batches()
    del batches["data_batch_5"]
    archive = write_archive(tmp_path / "raw" / ARCHIVE, batches)
    source = Cifar10(folder="cifar10", archive={"name": ARCHIVE, "md5": md5(archive)})
    with pytest.raises(DataFormatError, match=r"cifar-10-batches-py/data_batch_5 missing"):
        source.load(tmp_path / "raw")


def test_preprocess_writes_nchw_uint8_splits(mirror, tmp_path):
    root, _, md5_hex = mirror
    source = configured_source(md5_hex)
    source.fetch(tmp_path / "raw", mirror=str(root))
    # 10 held out: the validation set is stratified, so it needs at least one image per class
    meta = preprocess_dataset(
        source, "cifar10", "classification", tmp_path / "raw", tmp_path / "out", {"val_size": 10, "seed": 0}
    )
    train_x, train_y = load_split(tmp_path / "out", "train")
    val_x, _ = load_split(tmp_path / "out", "val")
    test_x, _ = load_split(tmp_path / "out", "test")
    assert train_x.shape == (10, 3, 32, 32) and train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert val_x.shape == (10, 3, 32, 32) and test_x.shape == (PER_BATCH, 3, 32, 32)
    assert meta["input_shape"] == [3, 32, 32] and len(meta["normalization"]["mean"]) == 3
    assert read_meta(tmp_path / "out")["class_names"] == CLASSES
    assert list(meta["sources"]) == [ARCHIVE]


def test_keras_cnn_preset_composes_and_builds_a_10_way_net():
    import torch

    cfg = compose_config("train", "experiment=cifar10_cnn")
    assert cfg.data.name == "cifar10" and cfg.data.datamodule.batch_size == 32
    assert dict(cfg.data.datamodule.augment) == {"shift_fraction": 0.1, "flip_probability": 0.5}
    assert cfg.optimizer.lr == pytest.approx(1e-4) and "weight_decay" not in cfg.optimizer
    assert "image_shape" not in cfg.data.source and "files" not in cfg.data.source
    net = instantiate(cfg.model.net)(input_shape=(3, 32, 32), num_outputs=10)
    assert sum(p.numel() for p in net.parameters()) == 1_250_858  # as model.summary() reports in the example
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    assert isinstance(optimizer, torch.optim.RMSprop)


REAL_MIRROR = os.environ.get("PIPELINE_DATA_MIRROR", "")


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_MIRROR or not (Path(REAL_MIRROR) / "cifar10" / ARCHIVE).is_file(),
    reason=f"needs the real 170 MB archive: set PIPELINE_DATA_MIRROR to a mirror holding cifar10/{ARCHIVE}",
)
def test_real_cifar10_from_the_mirror(tmp_path):
    """Acceptance: the official archive, with the official md5, gives 50,000 + 10,000 images, 5,000 + 1,000 a class."""
    cfg = compose_config("prepare", "data=cifar10")
    source = instantiate(cfg.data.source)
    source.fetch(tmp_path / "raw", mirror=REAL_MIRROR)
    data = source.load(tmp_path / "raw")
    assert data.train_x.shape == (50_000, 3, 32, 32) and data.test_x.shape == (10_000, 3, 32, 32)
    assert np.bincount(data.train_y).tolist() == [5000] * 10 and np.bincount(data.test_y).tolist() == [1000] * 10
    assert data.class_names == list(cfg.data.source.class_names) == CLASSES
    meta_names = Cifar10(folder="cifar10", archive=dict(cfg.data.source.archive)).load(tmp_path / "raw").class_names
    assert meta_names == CLASSES
