"""IDX parsing on files the tests write: good files round-trip, bad headers and counts are named."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from pipeline.data.idx import read_idx, read_idx_pair
from pipeline.errors import DataFormatError
from tests.conftest import idx_bytes, write_idx

IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
LABELS = np.array([0, 1, 2], dtype=np.uint8)


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip(tmp_path, compress):
    path = write_idx(tmp_path / "images", IMAGES, compress=compress)
    np.testing.assert_array_equal(read_idx(path, ndim=3), IMAGES)


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(b"\x00\x01" + idx_bytes(IMAGES)[2:])
    with pytest.raises(DataFormatError, match=r"images: wrong magic number 0x00010803; expected 0x00000803"):
        read_idx(path, ndim=3)


def test_wrong_type_code(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(IMAGES, type_code=0x0D))  # 0x0D = float32
    with pytest.raises(DataFormatError, match="wrong magic number 0x00000d03"):
        read_idx(path, ndim=3)


def test_labels_file_given_where_images_expected(tmp_path):
    path = write_idx(tmp_path / "labels.gz", LABELS)
    with pytest.raises(DataFormatError, match=r"wrong dimensions: header declares 1 dimension\(s\), expected 3"):
        read_idx(path, ndim=3)


def test_truncated_data(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(IMAGES)[:-7])
    with pytest.raises(DataFormatError, match=r"declares shape \(3, 4, 5\) \(60 values\) but the file holds 53 values"):
        read_idx(path, ndim=3)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES))[:-12])
    with pytest.raises(DataFormatError, match=r"images.gz: corrupt gzip stream"):
        read_idx(path, ndim=3)


def test_count_of_images_must_match_labels(tmp_path):
    images = write_idx(tmp_path / "img.gz", IMAGES)
    labels = write_idx(tmp_path / "lab.gz", np.array([0, 1], dtype=np.uint8))
    with pytest.raises(DataFormatError, match=r"img.gz holds 3 images but .*lab.gz holds 2 labels"):
        read_idx_pair(images, labels, image_shape=(4, 5))


def test_image_shape_must_match_config(tmp_path):
    images = write_idx(tmp_path / "img.gz", IMAGES)
    labels = write_idx(tmp_path / "lab.gz", LABELS)
    with pytest.raises(DataFormatError, match="images are 4x5, expected 28x28"):
        read_idx_pair(images, labels, image_shape=(28, 28))
