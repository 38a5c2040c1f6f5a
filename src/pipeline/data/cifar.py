"""CIFAR-10 from the official python-pickle archive (https://www.cs.toronto.edu/~kriz/cifar.html).

The archive stays compressed in ``raw_dir`` (as MNIST's ``.gz`` files do) and its batches are
read straight out of it. Each batch is a pickle, and unpickling runs whatever the file asks
for; the archive comes from the internet, so an unpickler that resolves only the few globals
a numpy array's pickle needs reads it, and anything else is refused before it can run.
"""

from __future__ import annotations

import logging
import pickle
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline.data.download import fetch_file, required_checksum, verify_checksum
from pipeline.data.sources import ImageData, Source
from pipeline.errors import DataConfigError, DataFormatError

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGE_SHAPE = (3, 32, 32)  # a row holds the red 32×32 plane, then green, then blue, each row-major


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What ``codecs.encode`` does in a protocol-2 pickle of ``bytes``, and nothing else it could."""
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"codecs.encode with encoding {encoding!r} (only latin1 is allowed)")
    return text.encode("latin1")


# Every global a numpy array's pickle names, written by numpy 1 (numpy.core) or 2 (numpy._core),
# in Python 2 (the official files) or 3 (protocol 2 pickles bytes through codecs.encode).
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("codecs", "encode"): _latin1_bytes,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; refuses every other global."""

    def __init__(self, file: IO[bytes], where: str) -> None:
        super().__init__(file, encoding="bytes")  # the official batches were pickled by Python 2
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataFormatError(
                f"{self.where}: the pickle asks for {module}.{name}; refused (a CIFAR batch holds only "
                "numpy arrays, lists and strings, and a pickle that names anything else could run code)"
            ) from None


def _unpickle(tf: tarfile.TarFile, info: tarfile.TarInfo, where: str) -> dict[bytes, Any]:
    fh = tf.extractfile(info)
    if fh is None:
        raise DataFormatError(f"{where}: not a regular file in the archive")
    with fh:
        try:
            batch = _ArrayUnpickler(fh, where).load()
        except DataFormatError:
            raise
        except Exception as exc:  # a malformed pickle raises almost anything
            raise DataFormatError(f"{where}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise DataFormatError(f"{where}: expected a pickled dict, got {type(batch).__name__}")
    return batch


def read_batches(archive: Path) -> dict[str, dict[bytes, Any]]:
    """Every batch (and ``batches.meta``) in the archive, by member name, in one pass over it."""
    wanted = {f"{BATCH_DIR}/{m}": m for m in (*TRAIN_BATCHES, TEST_BATCH, META)}
    batches: dict[str, dict[bytes, Any]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tf:
            for info in tf:  # in archive order: the gzip stream is decompressed once
                member = wanted.get(info.name)
                if member is not None and info.isfile():
                    batches[member] = _unpickle(tf, info, f"{archive}:{info.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataFormatError(f"{archive}: not a readable .tar.gz ({type(exc).__name__}: {exc})") from exc
    missing = [m for m in (*TRAIN_BATCHES, TEST_BATCH) if m not in batches]
    if missing:
        raise DataFormatError(
            f"{archive}: {', '.join(f'{BATCH_DIR}/{m}' for m in missing)} missing; "
            "expected the official cifar-10-python.tar.gz"
        )
    return batches


def _images_and_labels(batch: Mapping[bytes, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch's ``data`` (N×3072 uint8) as N×3×32×32 images and its ``labels`` as int64."""
    if b"data" not in batch or b"labels" not in batch:
        raise DataFormatError(f"{where}: expected the keys b'data' and b'labels', got {sorted(batch)}")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    row = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"{where}: b'data' should be a uint8 array of shape N×{row}, got {found}")
    if labels.ndim != 1 or len(labels) != len(data) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataFormatError(
            f"{where}: b'labels' should be {len(data)} integers (one per image), got {labels.dtype} of shape "
            f"{labels.shape}"
        )
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def _check_labels(labels: np.ndarray, class_names: Sequence[str], where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise DataFormatError(f"{where}: label {bad} is out of range for the {len(class_names)} class names")


class Cifar10(Source):
    """The official ``cifar-10-python.tar.gz``: 50,000 training and 10,000 test 32×32 colour images."""

    def __init__(
        self,
        folder: str,
        archive: Mapping[str, str],
        urls: Sequence[str] = (OFFICIAL_URL,),
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not archive.get("name"):
            raise DataConfigError("source.archive needs a `name` (cifar-10-python.tar.gz)")
        self.folder = folder
        self.name = str(archive["name"])
        self.checksum = required_checksum(archive, "source.archive")
        self.urls = list(urls)
        self.class_names = [str(c) for c in class_names] if class_names is not None else None

    def fetch(self, raw_dir: Path, mirror: str | None = None, timeout: float = 30.0) -> None:
        fetch_file(
            self.name, raw_dir, self.checksum, folder=self.folder, mirror=mirror, urls=self.urls, timeout=timeout
        )

    def load(self, raw_dir: Path) -> ImageData:
        path = raw_dir / self.name
        if not path.is_file():
            raise DataFormatError(f"{path}: raw file missing; run the fetch stage first")
        verify_checksum(path, self.checksum)
        batches = read_batches(path)
        class_names = self.class_names or self._meta_class_names(batches, path)
        splits = {}
        for split, members in (("train", TRAIN_BATCHES), ("test", (TEST_BATCH,))):
            parts = [_images_and_labels(batches[m], f"{path}:{BATCH_DIR}/{m}") for m in members]
            for member, (_, labels) in zip(members, parts, strict=True):
                _check_labels(labels, class_names, f"{path}:{BATCH_DIR}/{member}")
            splits[split] = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
        log.info("%s: %d training and %d test images", path, len(splits["train"][1]), len(splits["test"][1]))
        return ImageData(*splits["train"], *splits["test"], class_names)

    @staticmethod
    def _meta_class_names(batches: Mapping[str, Mapping[bytes, Any]], path: Path) -> list[str]:
        """``batches.meta``'s ``label_names``, for a config that does not list ``class_names``."""
        where = f"{path}:{BATCH_DIR}/{META}"
        names = batches.get(META, {}).get(b"label_names")
        if not isinstance(names, list) or not names:
            raise DataFormatError(f"{where}: no b'label_names' list; list the classes in the config's `class_names`")
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
