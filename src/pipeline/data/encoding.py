"""A table's columns as model features: numbers as they are, categories one-hot, fitted on the training split.

The same ``TableEncoding`` encodes the preprocess stage's splits and, recorded in ``meta.json``,
a checkpoint and the logged model's metadata, the raw rows ``pipeline.predict`` is given: a
row with text values gets exactly the features its training row got.

- One feature per category seen in the training split (no level dropped), named
  ``<column>=<value>``, in the column's place among the features.
- A category the training split never saw fails, naming the line and the value
  (``unknown: error``), or encodes as all zeros (``unknown: ignore``), as does a missing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.table import CsvFormat, is_missing, label_sort_key, parse_numbers
from pipeline.errors import DataFormatError


@dataclass(frozen=True)
class TableEncoding:
    """The raw feature columns (in order), each categorical column's categories, and how to read a file of them."""

    columns: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unknown: str = "error"
    fmt: CsvFormat = field(default_factory=CsvFormat)

    @classmethod
    def fit(cls, train: pd.DataFrame, categorical: Sequence[str], unknown: str, fmt: CsvFormat) -> TableEncoding:
        """The categories of ``train``'s categorical columns (sorted: numbers numerically, then text)."""
        categories = {
            name: tuple(sorted(train[name].dropna().astype(str).unique(), key=label_sort_key)) for name in categorical
        }
        return cls(tuple(str(c) for c in train.columns), categories, unknown, fmt)

    @property
    def feature_names(self) -> list[str]:
        """The model's input features: a column's name, or ``<column>=<value>`` per category."""
        names: list[str] = []
        for column in self.columns:
            values = self.categories.get(column)
            names += [f"{column}={value}" for value in values] if values is not None else [column]
        return names

    def transform(self, frame: pd.DataFrame, lines: np.ndarray, path: Path) -> np.ndarray:
        """float64 features ``(n, len(feature_names))``; NaN where a number is missing (imputed or refused by the
        caller). ``frame`` holds the raw columns: text cells, or numbers and ``None`` as `read_table` leaves them."""
        parts: list[np.ndarray] = []
        for column in self.columns:
            cells = frame[column]
            if column in self.categories:
                parts.append(self._one_hot(cells, column, lines, path))
            elif not pd.api.types.is_numeric_dtype(cells):
                values, bad = parse_numbers(cells.astype(str), self.fmt.decimal)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise DataFormatError(
                        f"{path}, line {lines[i]}, column {column!r}: {cells.iat[i]!r} is not a number"
                    )
                parts.append(values[:, None])
            else:
                parts.append(cells.to_numpy(dtype=np.float64)[:, None])
        return np.concatenate(parts, axis=1) if parts else np.empty((len(frame), 0))

    def _one_hot(self, cells: pd.Series, column: str, lines: np.ndarray, path: Path) -> np.ndarray:
        known = self.categories[column]
        text = cells.astype(object).where(cells.notna(), "").astype(str).str.strip()
        missing = is_missing(text)
        codes = pd.Index(known).get_indexer(text)  # -1: not a training category
        unseen = (codes < 0) & ~missing
        if unseen.any() and self.unknown == "error":
            i = int(np.flatnonzero(unseen)[0])
            raise DataFormatError(
                f"{path}, line {lines[i]}, column {column!r}: category {text.iat[i]!r} is not one of the training "
                f"split's ({', '.join(known)}); set the dataset's `source.unknown: ignore` to encode unseen "
                f"categories as all zeros ({int(unseen.sum())} such row(s))"
            )
        one_hot = np.zeros((len(cells), len(known)), dtype=np.float64)
        rows = np.flatnonzero(codes >= 0)
        one_hot[rows, codes[rows]] = 1.0
        return one_hot

    def record(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "categories": {name: list(values) for name, values in self.categories.items()},
            "unknown": self.unknown,
            "format": self.fmt.record(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TableEncoding:
        return cls(
            columns=tuple(record["columns"]),
            categories={name: tuple(values) for name, values in record.get("categories", {}).items()},
            unknown=record.get("unknown", "error"),
            fmt=CsvFormat.from_record(record.get("format", {})),
        )
