"""Serve a split whose inputs stay on disk: a memory-mapped ``.npy``, gathered one batch at a time.

Mapping alone does not bound memory: every page a gather touches stays in the process's
resident set (and in its peak, ``ru_maxrss``) until it is dropped. Linux also keeps file data
in large folios (up to 2 MiB) and maps a whole folio on a fault, so one random row can add
2 MiB, and a single shuffled batch can make hundreds of MiB resident: dropping pages between
batches bounds nothing, and dropping them within a batch is slower than reading each row with
``os.preadv``, which maps nothing (the rows come from the kernel's page cache, which is not
the process's memory). docs/performance.md has the measurements. So:

- a file no larger than ``resident_bytes`` is gathered from the map, one fancy-indexing per
  batch (as fast as in memory once its pages are resident, and it can never hold more than
  the file);
- a larger one is read row by row with ``os.preadv`` (where the OS has it; elsewhere it is
  gathered from the map, unbounded).

The ``.npy`` header is read with ``numpy.lib.format``'s public readers and the data mapped
with ``mmap`` (no copy); the dataset reopens its files after pickling (DataLoader workers).
"""

from __future__ import annotations

import mmap
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.errors import DataFormatError

RESIDENT_BYTES = 64 << 20


def map_npy(path: Path) -> tuple[mmap.mmap | None, np.ndarray, int]:
    """A read-only mapping of a ``.npy`` file, the array over it (no copy) and the data's file offset.

    The mapping is None for an empty array (a zero-length region cannot be mapped).
    """
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(f)
        except ValueError as exc:
            raise DataFormatError(f"{path}: not a .npy array file ({exc})") from None
        offset = f.tell()
        if dtype.hasobject:
            raise DataFormatError(f"{path}: holds Python objects ({dtype}); only plain arrays can be memory-mapped")
        if int(np.prod(shape)) == 0:
            return None, np.empty(shape, dtype=dtype), offset
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if offset + int(np.prod(shape)) * dtype.itemsize > len(mapping):
        raise DataFormatError(f"{path}: shorter than its header's shape {list(shape)} of {dtype} says")
    array = np.ndarray(shape, dtype=dtype, buffer=mapping, offset=offset, order="F" if fortran_order else "C")
    return mapping, array, offset


class MappedArrayDataset(Dataset):
    """(inputs, labels) of one split: inputs from a memory-mapped ``.npy``, labels in memory.

    Indexed with a whole tensor of indices at once (like ``TensorDataset``), it returns the batch
    a ``TensorDataset`` of the loaded arrays would. ``rows`` maps dataset positions to rows of the
    file (a class filter keeps some rows); None: every row, in order. Files larger than
    ``resident_bytes`` are read row by row, keeping none of their pages (see the module docstring).
    """

    def __init__(
        self, x_path: Path, y: torch.Tensor, rows: np.ndarray | None = None, resident_bytes: int | None = None
    ) -> None:
        self.x_path = Path(x_path)
        self.y = y
        self.rows = rows
        self.resident_bytes = RESIDENT_BYTES if resident_bytes is None else resident_bytes
        self._open()
        if len(self.y) != (len(self.x) if rows is None else len(rows)):
            raise DataFormatError(f"{self.x_path}: {len(self.x)} rows, but {len(self.y)} labels")

    def _open(self) -> None:
        self._map, self.x, self._offset = map_npy(self.x_path)
        self._row_bytes = self.x.itemsize * int(np.prod(self.x.shape[1:]))
        fits = self._map is None or len(self._map) <= self.resident_bytes
        self._reader = None
        if not fits and self.x.flags.c_contiguous and hasattr(os, "preadv"):
            self._reader = open(self.x_path, "rb", buffering=0)  # noqa: SIM115 (lives as long as the dataset)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        positions = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        rows = positions if self.rows is None else self.rows[positions]
        if self._reader is not None and rows.ndim == 1:
            x = self._read(rows)
        else:
            x = self.x[rows]
            if np.may_share_memory(x, self.x):  # an int or a slice: a view of the map; the batch gets a copy
                x = x.copy()
        return torch.from_numpy(x), self.y[index]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """``self.x[rows]`` read from the file (page cache) into a new array, mapping no page."""
        assert self._reader is not None  # __getitem__ reads rows only when the file was opened for it
        out = np.empty((len(rows), *self.x.shape[1:]), dtype=self.x.dtype)
        buffer, size, fd, pread = out.data.cast("B"), self._row_bytes, self._reader.fileno(), os.preadv
        for i, offset in enumerate((self._offset + rows.astype(np.int64) * size).tolist()):
            if pread(fd, [buffer[i * size : (i + 1) * size]], offset) != size:
                raise DataFormatError(f"{self.x_path}: row {rows[i]} is cut short (was the file changed?)")
        return out

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) as whole tensors, like ``TensorDataset.tensors``, for callers that slice a few
        rows (figures, the logged model's input example): the inputs are a read-only view of the map (no
        copy; never write to it), or a copy of the selected rows under a class filter."""
        if self.rows is not None:
            return torch.from_numpy(self.x[self.rows]), self.y
        with warnings.catch_warnings():  # torch warns that the array is not writable: the map is read-only
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(self.x), self.y

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_map", "x", "_offset", "_row_bytes", "_reader"):
            del state[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()
