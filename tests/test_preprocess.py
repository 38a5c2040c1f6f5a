"""Preprocessing: seeded stratified splits, training-only statistics, atomic output folders, real MNIST."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.preparing import preprocess_dataset
from pipeline.data.processed import load_split, read_meta
from pipeline.data.sources import CsvTable, GeneratedTable, IdxImages, SklearnTable
from pipeline.data.synthetic import blobs, line
from pipeline.errors import DataConfigError, DataFormatError
from tests.conftest import tiny_digits

TABLE_SPLIT = {"val_size": 0.2, "test_size": 0.2, "seed": 1, "missing": "fail"}


def _generated(tmp_path: Path, generator, **kwargs) -> tuple[GeneratedTable, Path]:
    source = GeneratedTable(lambda rng: generator(rng, **kwargs), seed=0)
    source.fetch(tmp_path / "raw")
    return source, tmp_path / "raw"


def test_table_splits_are_seeded_disjoint_and_stratified(tmp_path):
    source, raw = _generated(tmp_path, blobs, n_samples=500)
    meta = preprocess_dataset(source, "blobs", "classification", raw, tmp_path / "a", TABLE_SPLIT)
    preprocess_dataset(source, "blobs", "classification", raw, tmp_path / "b", TABLE_SPLIT)
    sizes = {s: meta["splits"][s]["n"] for s in ("train", "val", "test")}
    assert sizes == {"train": 300, "val": 100, "test": 100}
    rows = {s: load_split(tmp_path / "a", s)[0] for s in sizes}
    all_rows = np.concatenate(list(rows.values()))
    assert len(np.unique(all_rows, axis=0)) == 500  # disjoint and complete
    for split in sizes:  # same seed, same split
        np.testing.assert_array_equal(load_split(tmp_path / "a", split)[0], load_split(tmp_path / "b", split)[0])
    assert meta["class_counts"] == {"train": [150, 150], "val": [50, 50], "test": [50, 50]}
    x, y = load_split(tmp_path / "a", "train")
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_normalisation_statistics_come_from_the_training_split_only(tmp_path):
    source, raw = _generated(tmp_path, line, n_samples=400)
    meta = preprocess_dataset(source, "line", "regression", raw, tmp_path / "out", TABLE_SPLIT)
    x, y = load_split(tmp_path / "out", "train")
    assert meta["normalization"]["mean"] == pytest.approx(x.mean(axis=0).tolist(), rel=1e-5)
    assert meta["target_normalization"]["mean"] == pytest.approx(float(y.mean()), rel=1e-5)
    x_all = np.concatenate([load_split(tmp_path / "out", s)[0] for s in ("train", "val", "test")])
    assert meta["normalization"]["mean"][0] != pytest.approx(float(x_all.mean()), rel=1e-6)
    assert y.dtype == np.float32
    assert meta["sources"]["table.csv"]["sha256"]


def test_impute_fills_with_training_means_and_reports_dropped_rows(tmp_path):
    csv = tmp_path / "own.csv"
    rows = ["a,b,y"] + [f"{i},{'' if i % 10 == 3 else i * 2},{i % 2}" for i in range(100)] + ["5,5,"]
    csv.write_text("\n".join(rows) + "\n")
    source = CsvTable(target="y", path=str(csv))
    source.fetch(tmp_path / "raw")
    meta = preprocess_dataset(
        source, "own", "classification", tmp_path / "raw", tmp_path / "out", {**TABLE_SPLIT, "missing": "impute"}
    )
    assert meta["rows_read"] == 101 and meta["rows_dropped"] == 1
    for split in ("train", "val", "test"):
        assert not np.isnan(load_split(tmp_path / "out", split)[0]).any()
    with pytest.raises(DataFormatError, match=r"missing values on lines 5, 15, 25"):
        preprocess_dataset(source, "own", "classification", tmp_path / "raw", tmp_path / "bad", TABLE_SPLIT)
    assert not (tmp_path / "bad").exists()


def test_bundled_tables_parse(tmp_path):
    source = SklearnTable("iris")
    source.fetch(tmp_path / "raw")
    meta = preprocess_dataset(source, "iris", "classification", tmp_path / "raw", tmp_path / "out", TABLE_SPLIT)
    assert meta["class_names"] == ["setosa", "versicolor", "virginica"]
    assert meta["input_shape"] == [4] and sum(m["n"] for m in meta["splits"].values()) == 150


def test_split_sizes_are_validated(tmp_path):
    source, raw = _generated(tmp_path, line, n_samples=50)
    with pytest.raises(DataConfigError, match=r"preprocess.val_size=80 must select between 1 and 49 of the 50 rows"):
        preprocess_dataset(source, "line", "regression", raw, tmp_path / "out", {**TABLE_SPLIT, "val_size": 80})


def _tiny_images(tmp_path: Path, **overrides) -> IdxImages:
    files = tiny_digits(tmp_path / "mirror" / "tiny")
    return IdxImages(
        folder="tiny",
        files=files,
        class_names=[str(i) for i in range(10)],
        image_shape=overrides.get("image_shape", (8, 8)),
    )


def test_images_keep_test_set_and_carve_stratified_validation(tmp_path):
    source = _tiny_images(tmp_path)
    source.fetch(tmp_path / "raw", mirror=str(tmp_path / "mirror"))
    meta = preprocess_dataset(
        source, "tiny", "classification", tmp_path / "raw", tmp_path / "out", {"val_size": 50, "seed": 0}
    )
    assert meta["class_counts"]["val"] == [5] * 10 and meta["class_counts"]["train"] == [15] * 10
    x, y = load_split(tmp_path / "out", "train")
    assert x.shape == (150, 1, 8, 8) and x.dtype == np.uint8 and y.dtype == np.int64
    assert meta["input_shape"] == [1, 8, 8]


def test_raw_file_altered_after_fetch_is_caught(tmp_path):
    source = _tiny_images(tmp_path)
    source.fetch(tmp_path / "raw", mirror=str(tmp_path / "mirror"))
    (tmp_path / "raw" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"junk"))
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte.gz: checksum mismatch: expected md5"):
        preprocess_dataset(source, "tiny", "classification", tmp_path / "raw", tmp_path / "out", {"val_size": 50})


def test_failed_preprocess_leaves_previous_output_untouched(tmp_path, monkeypatch):
    source, raw = _generated(tmp_path, line, n_samples=100)
    out = tmp_path / "out"
    preprocess_dataset(source, "line", "regression", raw, out, TABLE_SPLIT)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    import pipeline.data.preparing as preparing

    real_save = preparing.save_npy

    def save_then_interrupt(path, array):  # the stage is killed after its first file is written
        real_save(path, array)
        raise KeyboardInterrupt

    monkeypatch.setattr(preparing, "save_npy", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(source, "line", "regression", raw, out, {**TABLE_SPLIT, "seed": 7})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]  # no temporary folders left


def test_read_meta_explains_a_missing_stage(tmp_path):
    with pytest.raises(DataFormatError, match="run the preprocess stage"):
        read_meta(tmp_path)


@pytest.mark.slow
def test_real_mnist_matches_the_official_files(tmp_path, real_mirror):
    """Acceptance: 60,000 + 10,000 images whose pixels and labels equal the official IDX files; val is stratified."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from pipeline.data.idx import read_idx
    from tests.conftest import REPO_ROOT

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("prepare", overrides=["data=mnist"])
    source = instantiate(cfg.data.source)
    source.fetch(tmp_path / "raw", mirror=str(real_mirror))
    meta = preprocess_dataset(
        source, "mnist", "classification", tmp_path / "raw", tmp_path / "out", dict(cfg.data.preprocess)
    )
    out = tmp_path / "out"
    official_x = read_idx(real_mirror / "mnist" / "train-images-idx3-ubyte.gz", ndim=3)
    official_y = read_idx(real_mirror / "mnist" / "train-labels-idx1-ubyte.gz", ndim=1)
    train_x, train_y = load_split(out, "train")
    val_x, val_y = load_split(out, "val")
    test_x, test_y = load_split(out, "test")
    assert len(train_y) + len(val_y) == 60_000 and len(val_y) == 5000 and len(test_y) == 10_000
    np.testing.assert_array_equal(test_x[:, 0], read_idx(real_mirror / "mnist" / "t10k-images-idx3-ubyte.gz", ndim=3))
    np.testing.assert_array_equal(test_y, read_idx(real_mirror / "mnist" / "t10k-labels-idx1-ubyte.gz", ndim=1))
    # train and val are disjoint subsets of the official training set, in file order, with labels intact
    keys = {bytes(img) + bytes([lab]) for img, lab in zip(official_x.reshape(60_000, -1), official_y, strict=True)}
    for x, y in ((train_x, train_y), (val_x, val_y)):
        assert all(bytes(img) + bytes([lab]) in keys for img, lab in zip(x.reshape(len(x), -1), y, strict=True))
    # stratified: each class's share of val equals its share of the official training set (within one image)
    expected = np.bincount(official_y, minlength=10) * 5000 / 60_000
    assert np.abs(np.array(meta["class_counts"]["val"]) - expected).max() <= 1
    assert meta["normalization"]["mean"][0] == pytest.approx(0.1307, abs=1e-3)
    assert meta["normalization"]["std"][0] == pytest.approx(0.3081, abs=1e-3)
    assert json.loads((out / "meta.json").read_text())["sources"]["train-images-idx3-ubyte.gz"]["sha256"] == (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )
