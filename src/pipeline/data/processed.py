"""The model-ready format the preprocess stage writes and the datamodules read.

One folder per dataset: ``{train,val,test}_x.npy`` and ``{train,val,test}_y.npy`` (uint8
images as N×C×H×W, float32 tables; int64 class labels, float32 regression targets) and a
``meta.json`` with shapes, class names, training-split normalisation statistics and the
checksums of the raw files it came from. Arrays are plain ``.npy`` so they can be
memory-mapped.

Training imports this module for ``read_meta`` and ``load_split`` only, so what the preprocess
stage alone needs (the sources, scikit-learn's splitting) is imported inside its functions: a
training process starts without scikit-learn, pandas and pyarrow.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.atomic import atomic_dir, save_json, save_npy
from pipeline.data.download import file_digest
from pipeline.data.table import Table, apply_missing_policy, encode_target, impute_with_means
from pipeline.errors import DataConfigError, DataFormatError

if TYPE_CHECKING:
    from pipeline.data.sources import ImageData, Source

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
FORMAT_VERSION = 1


@dataclass
class Processed:
    """Arrays per split plus the metadata that describes them."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    meta: dict[str, Any] = field(default_factory=dict)


def _class_counts(y: np.ndarray, n_classes: int) -> list[int]:
    return np.bincount(y, minlength=n_classes).tolist()


def process_images(data: ImageData, val_size: float, seed: int) -> Processed:
    """Keep the official test set; carve a stratified, seeded validation set out of the official train set."""
    from pipeline.data.splits import holdout, holdout_count

    n = len(data.train_y)
    train_idx, val_idx = holdout(
        n, holdout_count(val_size, n, "preprocess.val_size"), seed, data.train_y, "preprocess.val_size"
    )
    with_channel = (lambda x: x[:, None]) if data.train_x.ndim == 3 else (lambda x: x)
    train_x = with_channel(data.train_x[train_idx])
    pixels = train_x.astype(np.float64) / 255.0
    channel_axes = (0, *range(2, train_x.ndim))
    n_classes = len(data.class_names)
    arrays = {
        "train": (train_x, data.train_y[train_idx]),
        "val": (with_channel(data.train_x[val_idx]), data.train_y[val_idx]),
        "test": (with_channel(data.test_x), data.test_y),
    }
    meta = {
        "kind": "image",
        "task": "classification",
        "class_names": data.class_names,
        "input_shape": list(train_x.shape[1:]),
        # Statistics of pixel/255 over the training split only: no peeking at val or test.
        "normalization": {
            "mean": pixels.mean(axis=channel_axes).tolist(),
            "std": pixels.std(axis=channel_axes).tolist(),
        },
        "class_counts": {split: _class_counts(y, n_classes) for split, (_, y) in arrays.items()},
    }
    return Processed(arrays, meta)


def process_table(
    table: Table, task: str, val_size: float, test_size: float, seed: int, missing: str = "fail"
) -> Processed:
    """Validate a table, then split it into seeded (and, for classification, stratified) train/val/test."""
    from pipeline.data.splits import holdout, holdout_count

    rows_read = len(table.target)
    table = apply_missing_policy(table, missing)
    y, class_names = encode_target(table, task)
    n = len(y)
    stratify = y if task == "classification" else None
    n_test = holdout_count(test_size, n, "preprocess.test_size")
    n_val = holdout_count(val_size, n, "preprocess.val_size")
    if n_test + n_val >= n:
        raise DataConfigError(
            f"preprocess.val_size + test_size select {n_val + n_test} of {n} rows; nothing is left to train on"
        )
    rest, test_idx = holdout(n, n_test, seed, stratify, "preprocess.test_size")
    kept, held = holdout(len(rest), n_val, seed, None if stratify is None else stratify[rest], "preprocess.val_size")
    index = {"train": rest[kept], "val": rest[held], "test": test_idx}
    x = {split: table.features[idx] for split, idx in index.items()}
    if missing == "impute":
        x["train"], x["val"], x["test"] = impute_with_means(x["train"], x["val"], x["test"])
    arrays = {split: (x[split].astype(np.float32), y[idx]) for split, idx in index.items()}
    train_x = x["train"]
    std = train_x.std(axis=0)
    meta: dict[str, Any] = {
        "kind": "table",
        "task": task,
        "feature_names": table.feature_names,
        "target_name": table.target_name,
        "input_shape": [len(table.feature_names)],
        "normalization": {"mean": train_x.mean(axis=0).tolist(), "std": np.where(std > 0, std, 1.0).tolist()},
        "rows_read": rows_read,
        "rows_dropped": rows_read - n,
    }
    if class_names is not None:
        meta["class_names"] = class_names
        meta["class_counts"] = {split: _class_counts(y_s, len(class_names)) for split, (_, y_s) in arrays.items()}
    else:
        train_y = arrays["train"][1]
        meta["target_normalization"] = {"mean": float(train_y.mean()), "std": float(train_y.std() or 1.0)}
    return Processed(arrays, meta)


def preprocess_dataset(
    source: Source, name: str, task: str, raw_dir: Path, out_dir: Path, split: dict[str, Any]
) -> dict[str, Any]:
    """Load ``raw_dir`` through ``source``, split it, and write ``out_dir`` as one atomic folder."""
    from pipeline.data.sources import ImageData

    loaded = source.load(raw_dir)
    seed = int(split.get("seed", 0))
    if isinstance(loaded, ImageData):
        if task != "classification":
            raise DataConfigError(f"data.task={task!r}: image datasets are classification datasets")
        processed = process_images(loaded, split["val_size"], seed)
    else:
        processed = process_table(
            loaded, task, split["val_size"], split["test_size"], seed, split.get("missing", "fail")
        )
    raw_files = sorted(p for p in raw_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        **processed.meta,
        "splits": {
            s: {"n": len(y), "x_shape": list(x.shape), "x_dtype": str(x.dtype), "y_dtype": str(y.dtype)}
            for s, (x, y) in processed.arrays.items()
        },
        "split": dict(split),
        "sources": {p.name: {"sha256": file_digest(p, "sha256"), "bytes": p.stat().st_size} for p in raw_files},
    }
    with atomic_dir(out_dir) as tmp:
        for split_name, (x, y) in processed.arrays.items():
            save_npy(tmp / f"{split_name}_x.npy", x)
            save_npy(tmp / f"{split_name}_y.npy", y)
            # what a training run names as its inputs (MLflow datasets), without hashing the arrays again
            files = (tmp / f"{split_name}_x.npy", tmp / f"{split_name}_y.npy")
            meta["splits"][split_name]["md5"] = {
                k: file_digest(f, "md5") for k, f in zip(("x", "y"), files, strict=True)
            }
        save_json(tmp / META_FILE, meta)
    log.info("%s: wrote %s (%s)", name, out_dir, ", ".join(f"{s} {m['n']}" for s, m in meta["splits"].items()))
    return meta


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
