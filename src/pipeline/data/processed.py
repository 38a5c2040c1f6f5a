"""The model-ready format the preprocess stage writes (``pipeline.data.preparing``) and training reads.

One folder per dataset: ``{train,val,test}_x.npy`` and ``{train,val,test}_y.npy`` (uint8
images as N×C×H×W, float32 tables; int64 class labels, float32 regression targets) and a
``meta.json`` with shapes, class names, training-split normalisation statistics, a table's
encoding and the checksums of the raw files it came from. Arrays are plain ``.npy`` so they
can be memory-mapped.

Training imports only this module of the data stages' code, so it starts without the sources,
scikit-learn, pandas or Pillow, and a DVC train stage does not depend on how raw files are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.errors import DataConfigError, DataFormatError

SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
FORMAT_VERSION = 1


def read_meta(processed_dir: Path) -> dict[str, Any]:
    """The ``meta.json`` of a preprocessed dataset, with a clear error when the stage has not run."""
    path = Path(processed_dir) / META_FILE
    if not path.is_file():
        raise DataFormatError(f"{path}: not found; run the preprocess stage for this dataset first (dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_split(processed_dir: Path, split: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One split's (x, y) arrays; ``mmap=True`` maps them instead of reading them into memory."""
    if split not in SPLITS:
        raise DataConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    mode: Literal["r"] | None = "r" if mmap else None
    return (
        np.load(Path(processed_dir) / f"{split}_x.npy", mmap_mode=mode, allow_pickle=False),
        np.load(Path(processed_dir) / f"{split}_y.npy", mmap_mode=mode, allow_pickle=False),
    )
