"""Parse and validate CSV tables: header, numeric features, a declared target, missing values.

Problems are reported by file line number (the header is line 1), so a user can open
the file and find the bad row.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataConfigError, DataFormatError

TASKS = ("regression", "classification")
MISSING_POLICIES = ("fail", "drop", "impute")
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
_MAX_LISTED = 10


@dataclass
class Table:
    """A parsed table. ``features`` holds NaN where a cell was missing; ``lines`` maps rows to file lines."""

    path: Path
    feature_names: list[str]
    target_name: str
    features: np.ndarray  # float64 (n_rows, n_features)
    target: list[str]  # raw target cells; converted per task by `encode_target`
    lines: np.ndarray  # int64 (n_rows,), 1-based line numbers in the file

    def missing_target_rows(self) -> np.ndarray:
        return np.array([_is_missing(v) for v in self.target], dtype=bool)

    def missing_feature_rows(self) -> np.ndarray:
        return np.isnan(self.features).any(axis=1)

    def select(self, keep: np.ndarray) -> Table:
        return Table(
            self.path,
            self.feature_names,
            self.target_name,
            self.features[keep],
            [v for v, k in zip(self.target, keep, strict=True) if k],
            self.lines[keep],
        )


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_MARKERS


def describe_lines(lines: Sequence[int]) -> str:
    """'lines 3, 7, 9' or 'lines 3, 7, ... (25 in all)' for an error message."""
    shown = ", ".join(str(int(n)) for n in lines[:_MAX_LISTED])
    more = f", ... ({len(lines)} in all)" if len(lines) > _MAX_LISTED else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def read_table(
    path: str | Path,
    target: str,
    features: Sequence[str] | None = None,
    delimiter: str = ",",
) -> Table:
    """Read a CSV with a header row; every feature column must be numeric (missing cells allowed)."""
    path = Path(path)
    header, body = _read_rows(path, delimiter)
    features = _feature_columns(path, header, target, features)
    target_idx = header.index(target)
    return Table(
        path=path,
        feature_names=list(features),
        target_name=target,
        features=_parse_features(path, body, [header.index(name) for name in features], features),
        target=[row[target_idx].strip() for row in body],
        lines=np.arange(2, len(body) + 2, dtype=np.int64),
    )


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], list[list[str]]]:
    """The header and the data rows, every row as wide as the header."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()  # trailing blank lines are not rows
    if not rows:
        raise DataFormatError(f"{path}: the file is empty; expected a header row and at least one data row")
    header = [name.strip() for name in rows[0]]
    if len(rows) == 1:
        raise DataFormatError(f"{path}: has a header ({', '.join(header)}) but no data rows")
    ragged = [(i + 1, len(row)) for i, row in enumerate(rows) if len(row) != len(header)]
    if ragged:
        detail = "; ".join(f"line {n} has {k}" for n, k in ragged[:_MAX_LISTED])
        raise DataFormatError(
            f"{path}: ragged rows: the header has {len(header)} fields but {detail}"
            + (f" ({len(ragged)} ragged rows in all)" if len(ragged) > _MAX_LISTED else "")
        )
    return header, rows[1:]


def _feature_columns(path: Path, header: list[str], target: str, features: Sequence[str] | None) -> list[str]:
    """The declared feature columns (default: every column but the target), each checked against the header."""
    if target not in header:
        raise DataFormatError(
            f"{path}: the target column {target!r} declared in the config is not in the header; "
            f"columns are: {', '.join(header)}"
        )
    if features is None:
        features = [name for name in header if name != target]
    unknown = [name for name in features if name not in header]
    if unknown:
        raise DataFormatError(f"{path}: feature column(s) {', '.join(unknown)} not in the header ({', '.join(header)})")
    if not features:
        raise DataFormatError(f"{path}: no feature columns besides the target {target!r}")
    return list(features)


def _parse_features(path: Path, body: list[list[str]], columns: list[int], features: Sequence[str]) -> np.ndarray:
    """The feature cells as float64, NaN where a cell is missing; every other non-number is reported by line."""
    values = np.empty((len(body), len(columns)), dtype=np.float64)
    bad: list[str] = []
    for i, row in enumerate(body):
        for j, col in enumerate(columns):
            cell = row[col]
            if _is_missing(cell):
                values[i, j] = math.nan
                continue
            try:
                values[i, j] = float(cell)
            except ValueError:
                values[i, j] = math.nan
                bad.append(f"line {i + 2}, column {features[j]!r}: {cell!r}" if len(bad) < _MAX_LISTED else "")
    if bad:
        listed = "; ".join(b for b in bad if b)
        raise DataFormatError(
            f"{path}: non-numeric feature values ({len(bad)} in all): {listed}. "
            "Every feature column must hold numbers; encode categories as numbers or leave the column out "
            "of the config's `features` list"
        )
    return values


def apply_missing_policy(table: Table, policy: str) -> Table:
    """Handle rows with missing cells before splitting: ``fail`` names them, ``drop`` removes them.

    ``impute`` only drops rows whose *target* is missing here; missing features are filled
    with training-split means after the split (see `impute_with_means`), so no statistic
    of the validation or test rows leaks into training.
    """
    if policy not in MISSING_POLICIES:
        raise DataConfigError(f"missing-value policy {policy!r} is not one of {', '.join(MISSING_POLICIES)}")
    no_target = table.missing_target_rows()
    no_feature = table.missing_feature_rows()
    if policy == "fail":
        incomplete = no_target | no_feature
        if incomplete.any():
            raise DataFormatError(
                f"{table.path}: missing values on {describe_lines(table.lines[incomplete])}. "
                "Fix the file, or set the dataset's `missing` policy to `drop` (remove those rows) "
                "or `impute` (fill features with training-split column means)"
            )
        return table
    if policy == "drop":
        return table.select(~(no_target | no_feature))
    return table.select(~no_target)


def impute_with_means(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Fill NaNs in every array with the per-column means of ``train`` (the only split a model may learn from)."""
    means = np.nanmean(np.where(np.isnan(train).all(axis=0), 0.0, train), axis=0) if train.size else train
    return [np.where(np.isnan(a), means, a) for a in (train, *others)]


def encode_target(table: Table, task: str) -> tuple[np.ndarray, list[str] | None]:
    """Convert raw target cells: floats for regression, class indices (and names) for classification.

    Class names are sorted: numerically when every label is a number (0, 1, 2, ... stay in
    place), alphabetically otherwise.
    """
    if task not in TASKS:
        raise DataConfigError(f"task {task!r} is not one of {', '.join(TASKS)}")
    if task == "regression":
        out = np.empty(len(table.target), dtype=np.float32)
        for i, cell in enumerate(table.target):
            try:
                out[i] = float(cell)
            except ValueError:
                raise DataFormatError(
                    f"{table.path}: line {table.lines[i]}, target column {table.target_name!r}: {cell!r} "
                    "is not a number, and a regression target must be numeric"
                ) from None
        return out, None
    labels = sorted(set(table.target), key=_label_sort_key)
    index = {label: i for i, label in enumerate(labels)}
    if len(labels) < 2:
        raise DataFormatError(
            f"{table.path}: target column {table.target_name!r} has a single class ({labels[0]!r}); "
            "classification needs at least two"
        )
    return np.array([index[v] for v in table.target], dtype=np.int64), [_label_name(v) for v in labels]


def _label_sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _label_name(label: str) -> str:
    """'1.0' -> '1' so numeric class names read naturally."""
    try:
        number = float(label)
    except ValueError:
        return label
    return str(int(number)) if number.is_integer() else label
