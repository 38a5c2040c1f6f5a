"""Parse IDX files (the MNIST family's format) into numpy arrays, validating the header.

Layout: two zero bytes, a type code (0x08 = uint8), the number of dimensions, one
big-endian int32 per dimension, then the values. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from pipeline.errors import DataFormatError

_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: corrupt gzip stream ({exc})") from exc


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read a uint8 IDX file with ``ndim`` dimensions; raise DataFormatError naming what is wrong."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: {len(data)} bytes is too short for an IDX header")
    zero1, zero2, type_code, file_ndim = data[:4]
    magic = int.from_bytes(data[:4], "big")
    if zero1 or zero2 or type_code != _UINT8:
        raise DataFormatError(
            f"{path}: wrong magic number 0x{magic:08x}; expected 0x{_UINT8 << 8 | ndim:08x} "
            f"(an unsigned-byte IDX file with {ndim} dimension(s))"
        )
    if file_ndim != ndim:
        raise DataFormatError(
            f"{path}: wrong dimensions: header declares {file_ndim} dimension(s), expected {ndim} "
            f"(magic 0x{magic:08x}, expected 0x{_UINT8 << 8 | ndim:08x})"
        )
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise DataFormatError(f"{path}: header truncated: {len(data)} bytes, need {header_end} for {ndim} sizes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(data) - header_end
    if actual != expected:
        raise DataFormatError(
            f"{path}: header declares shape {shape} ({expected} values) but the file holds {actual} values"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_end).reshape(shape).copy()


def read_idx_pair(
    images_path: str | Path, labels_path: str | Path, image_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label files and check they agree with each other and the config."""
    images = read_idx(images_path, ndim=1 + len(image_shape))
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != tuple(image_shape):
        raise DataFormatError(
            f"{images_path}: images are {'x'.join(map(str, images.shape[1:]))}, expected "
            f"{'x'.join(map(str, image_shape))} as the dataset config's image_shape declares"
        )
    if len(images) != len(labels):
        raise DataFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; they must be equal"
        )
    return images, labels
