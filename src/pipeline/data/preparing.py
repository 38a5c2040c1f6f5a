"""The preprocess stage's work: raw files (through their source) to the model-ready format of
``pipeline.data.processed``, split, encoded and normalised with the training split's statistics only.

- images with an official train/test split (IDX, CIFAR-10): a stratified validation set carved
  out of the official training set;
- an image folder: decoded once, straight into memory-mapped arrays, with seeded stratified
  splits unless the folder has its own ``test/``;
- a table: seeded (stratified for classes) train/val/test rows, features encoded by
  ``pipeline.data.encoding`` as the training split says (categories, imputation means).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.atomic import atomic_dir, save_json, save_npy
from pipeline.data.download import file_digest
from pipeline.data.processed import FORMAT_VERSION, META_FILE, SPLITS
from pipeline.errors import DataConfigError

if TYPE_CHECKING:
    from pipeline.data.sequences import SumsData
    from pipeline.data.sources import ImageData, ImageFolderData, Source
    from pipeline.data.table import Table

log = logging.getLogger(__name__)


@dataclass
class Processed:
    """Arrays per split plus the metadata that describes them."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    meta: dict[str, Any] = field(default_factory=dict)


def _class_counts(y: np.ndarray, n_classes: int) -> list[int]:
    return np.bincount(y, minlength=n_classes).tolist()


def process_images(data: ImageData, val_size: float, seed: int) -> Processed:
    """Keep the official test set; carve a stratified, seeded validation set out of the official train set."""
    from pipeline.data.image_folder import channel_statistics
    from pipeline.data.splits import holdout, holdout_count

    n = len(data.train_y)
    train_idx, val_idx = holdout(
        n, holdout_count(val_size, n, "preprocess.val_size"), seed, data.train_y, "preprocess.val_size"
    )
    with_channel = (lambda x: x[:, None]) if data.train_x.ndim == 3 else (lambda x: x)
    arrays = {
        "train": (with_channel(data.train_x[train_idx]), data.train_y[train_idx]),
        "val": (with_channel(data.train_x[val_idx]), data.train_y[val_idx]),
        "test": (with_channel(data.test_x), data.test_y),
    }
    mean, std = channel_statistics(arrays["train"][0])  # in chunks: no float copy of 45,000 CIFAR images
    return Processed(arrays, _image_meta(data.class_names, arrays, mean, std))


def _image_meta(
    class_names: list[str], arrays: dict[str, tuple[np.ndarray, np.ndarray]], mean: list[float], std: list[float]
) -> dict[str, Any]:
    return {
        "kind": "image",
        "task": "classification",
        "class_names": class_names,
        "input_shape": list(arrays["train"][0].shape[1:]),
        # Statistics of pixel/255 over the training split only: no peeking at val or test.
        "normalization": {"mean": mean, "std": [s if s > 0 else 1.0 for s in std]},  # a constant channel: no 0/0
        "class_counts": {split: _class_counts(y, len(class_names)) for split, (_, y) in arrays.items()},
    }


def process_image_folder(data: ImageFolderData, split: dict[str, Any], out: Path) -> Processed:
    """Split the listed files (an official test/ is kept; otherwise seeded stratified val and test splits), then
    decode each split's images once, straight into its memory-mapped ``<split>_x.npy`` in ``out``."""
    from pipeline.data.image_folder import channel_statistics, decode_images

    files, labels = _image_folder_splits(data, split)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in SPLITS:
        shape = (len(files[name]), data.channels, *data.image_size)
        x = np.lib.format.open_memmap(out / f"{name}_x.npy", mode="w+", dtype=np.uint8, shape=shape)
        decode_images(files[name], x, data.image_size, data.channels)
        x.flush()
        arrays[name] = (x, labels[name])
    mean, std = channel_statistics(arrays["train"][0])
    return Processed(arrays, _image_meta(data.files.class_names, arrays, mean, std))


def _image_folder_splits(
    data: ImageFolderData, split: dict[str, Any]
) -> tuple[dict[str, list[Path]], dict[str, np.ndarray]]:
    """Files and labels of train, val and test."""
    from pipeline.data.splits import holdout, holdout_count

    listed = data.files.splits
    if "all" in listed:
        files, labels = listed["all"]
        index = _table_splits(labels, "classification", split)
    else:
        files, labels = listed["train"]
        n, seed = len(labels), int(split.get("seed", 0))
        kept, held = holdout(
            n, holdout_count(split["val_size"], n, "preprocess.val_size"), seed, labels, "preprocess.val_size"
        )
        index = {"train": kept, "val": held}
        if split.get("test_size"):
            log.info("the folder has an official test/ split: preprocess.test_size is not used")
    chosen = {name: ([files[i] for i in idx], labels[idx]) for name, idx in index.items()}
    if "test" not in chosen:
        chosen["test"] = listed["test"]
    return {name: f for name, (f, _) in chosen.items()}, {name: y for name, (_, y) in chosen.items()}


def process_table(table: Table, task: str, split: dict[str, Any]) -> Processed:
    """Validate a table, split it into seeded (and, for classification, stratified) train/val/test, then encode
    its features with what the training split holds (categories, imputation means, normalisation)."""
    from pipeline.data.encoding import TableEncoding
    from pipeline.data.table import apply_missing_policy, encode_target, impute_with_means

    rows_read = len(table.target)
    missing = split.get("missing", "fail")
    table = apply_missing_policy(table, missing)
    y, class_names = encode_target(table, task)
    index = _table_splits(y, task, split)
    encoding = TableEncoding.fit(table.features.iloc[index["train"]], table.categorical, table.unknown, table.fmt)
    x = {s: encoding.transform(table.features.iloc[idx], table.lines[idx], table.path) for s, idx in index.items()}
    x["train"], x["val"], x["test"] = impute_with_means(x["train"], x["val"], x["test"])  # NaNs remain with impute only
    arrays = {s: (x[s].astype(np.float32), y[idx]) for s, idx in index.items()}
    std = x["train"].std(axis=0)
    meta: dict[str, Any] = {
        "kind": "table",
        "task": task,
        "feature_names": encoding.feature_names,
        "target_name": table.target_name,
        "input_shape": [len(encoding.feature_names)],
        "normalization": {"mean": x["train"].mean(axis=0).tolist(), "std": np.where(std > 0, std, 1.0).tolist()},
        "encoding": encoding.record(),
        "rows_read": rows_read,
        "rows_dropped": rows_read - len(y),
    }
    if class_names is not None:
        meta["class_names"] = class_names
        meta["class_counts"] = {s: _class_counts(y_s, len(class_names)) for s, (_, y_s) in arrays.items()}
        return Processed(arrays, meta)
    train_y = arrays["train"][1].astype(np.float64)
    meta["target_normalization"] = {"mean": float(train_y.mean()), "std": float(train_y.std() or 1.0)}
    if split.get("scale_target", False):  # the model learns (y - mean) / std and answers in y's units
        meta["target_scale"] = dict(meta["target_normalization"])
    return Processed(arrays, meta)


def _table_splits(y: np.ndarray, task: str, split: dict[str, Any]) -> dict[str, np.ndarray]:
    """Row indices of train, val and test: the test rows first, then val out of the rest (stratified by class)."""
    from pipeline.data.splits import holdout, holdout_count

    n, seed = len(y), int(split.get("seed", 0))
    stratify = y if task == "classification" else None
    n_test = holdout_count(split["test_size"], n, "preprocess.test_size")
    n_val = holdout_count(split["val_size"], n, "preprocess.val_size")
    if n_test + n_val >= n:
        raise DataConfigError(
            f"preprocess.val_size + test_size select {n_val + n_test} of {n} rows; nothing is left to train on"
        )
    rest, test_idx = holdout(n, n_test, seed, stratify, "preprocess.test_size")
    kept, held = holdout(len(rest), n_val, seed, None if stratify is None else stratify[rest], "preprocess.val_size")
    return {"train": rest[kept], "val": rest[held], "test": test_idx}


def process_sums(data: SumsData, split: dict[str, Any]) -> Processed:
    """Pad, optionally reverse and encode the sums, then split them into seeded train/val/test rows (each sum is
    one row: none is in two splits)."""
    from pipeline.data.tokens import VOCABULARY, encode_text

    reverse = bool(split.get("reverse_question", False))
    x = encode_text(data.questions, 2 * data.digits + 1, reverse=reverse)
    y = encode_text(data.answers, data.digits + 1)
    index = _table_splits(np.zeros(len(x)), "regression", split)  # plain seeded splits, nothing to stratify
    arrays = {name: (x[idx], y[idx]) for name, idx in index.items()}
    meta = {
        "kind": "sequence",
        "task": "sequence",
        "class_names": list(VOCABULARY),  # the output classes of every answer position
        "input_shape": [x.shape[1]],
        "output_length": y.shape[1],
        "reverse_question": reverse,
        "digits": data.digits,
        # how predict turns new questions into ids (the data spec carries it into checkpoints and logged models)
        "encoding": {"kind": "text", "vocabulary": VOCABULARY, "length": x.shape[1], "reverse": reverse},
        "normalization": {"mean": [0.0], "std": [1.0]},  # ids are not scaled
    }
    return Processed(arrays, meta)


def preprocess_dataset(
    source: Source, name: str, task: str, raw_dir: Path, out_dir: Path, split: dict[str, Any]
) -> dict[str, Any]:
    """Load ``raw_dir`` through ``source``, split it, and write ``out_dir`` as one atomic folder."""
    from pipeline.data.sequences import SumsData
    from pipeline.data.sources import ImageData, ImageFolderData

    loaded = source.load(raw_dir)
    if isinstance(loaded, ImageData | ImageFolderData) and task != "classification":
        raise DataConfigError(f"data.task={task!r}: image datasets are classification datasets")
    if isinstance(loaded, SumsData) != (task == "sequence"):
        raise DataConfigError(f"data.task={task!r}: sequence datasets, and only they, have task `sequence`")
    raw_files = sorted(p for p in raw_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    with atomic_dir(out_dir) as tmp:
        if isinstance(loaded, SumsData):
            processed = process_sums(loaded, split)
        elif isinstance(loaded, ImageFolderData):
            processed = process_image_folder(loaded, split, tmp)  # writes its arrays as it decodes them
        elif isinstance(loaded, ImageData):
            processed = process_images(loaded, split["val_size"], int(split.get("seed", 0)))
        else:
            processed = process_table(loaded, task, split)
        splits: dict[str, Any] = {}
        for split_name, (x, y) in processed.arrays.items():
            files = (tmp / f"{split_name}_x.npy", tmp / f"{split_name}_y.npy")
            for file, array in zip(files, (x, y), strict=True):
                if not file.exists():
                    save_npy(file, array)
            splits[split_name] = {
                "n": len(y),
                "x_shape": list(x.shape),
                "x_dtype": str(x.dtype),
                "y_dtype": str(y.dtype),
                # what a training run names as its inputs (MLflow datasets), without hashing the arrays again
                "md5": {k: file_digest(f, "md5") for k, f in zip(("x", "y"), files, strict=True)},
            }
        meta = {
            "format_version": FORMAT_VERSION,
            "name": name,
            **processed.meta,
            "splits": splits,
            "split": dict(split),
            "sources": {p.name: {"sha256": file_digest(p, "sha256"), "bytes": p.stat().st_size} for p in raw_files},
        }
        save_json(tmp / META_FILE, meta)
    log.info("%s: wrote %s (%s)", name, out_dir, ", ".join(f"{s} {m['n']}" for s, m in meta["splits"].items()))
    return meta
