"""Read and validate CSV tables with pandas: any delimiter, quoting, encoding, decimal mark, with or without a header.

pandas tokenises the file (quoted fields with commas and newlines, a UTF-8 BOM, Latin-1, ``;``,
tabs or runs of whitespace); this module keeps the project's own checks and messages, which name
the file, the line, the column and the value. A line is a row of the file counted from 1 with the
header as line 1 (a quoted field spanning several lines counts as one), as pandas counts them.

Numeric feature columns become float64 (NaN where a cell is missing); ``categorical`` columns stay
text until `pipeline.data.encoding` one-hot encodes them with the training split's categories.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DataConfigError, DataFormatError

TASKS = ("regression", "classification")
MISSING_POLICIES = ("fail", "drop", "impute")
UNKNOWN_POLICIES = ("error", "ignore")  # a category the training split never saw
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
WHITESPACE = r"\s+"  # the delimiter of files aligned with spaces and tabs (e.g. UCI's auto-mpg.data)
_MAX_LISTED = 10


@dataclass(frozen=True)
class CsvFormat:
    """How a table file is written; recorded with a trained model so ``predict`` reads new rows the same way."""

    delimiter: str = ","
    header: bool = True
    columns: tuple[str, ...] | None = None  # names for a headerless file, or new names for a file's header
    encoding: str = "utf-8"
    decimal: str = "."

    def __post_init__(self) -> None:
        if self.decimal not in (".", ","):
            raise DataConfigError(f"source.decimal={self.decimal!r}: expected '.' or ','")
        if self.decimal == self.delimiter:
            raise DataConfigError(f"source.decimal and source.delimiter are both {self.decimal!r}; they must differ")
        if not self.header and not self.columns:
            raise DataConfigError("source.header=false needs source.columns: the names of the file's columns, in order")

    def record(self) -> dict[str, Any]:
        return {
            "delimiter": self.delimiter,
            "header": self.header,
            "columns": list(self.columns) if self.columns else None,
            "encoding": self.encoding,
            "decimal": self.decimal,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CsvFormat:
        columns = record.get("columns")
        return cls(
            delimiter=record.get("delimiter", ","),
            header=bool(record.get("header", True)),
            columns=tuple(columns) if columns else None,
            encoding=record.get("encoding", "utf-8"),
            decimal=record.get("decimal", "."),
        )


def is_missing(cells: pd.Series) -> np.ndarray:
    """Which cells hold one of the missing-value markers (empty, NA, ?, ...)."""
    return cells.str.strip().str.lower().isin(MISSING_MARKERS).to_numpy()


def parse_numbers(cells: pd.Series, decimal: str = ".") -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN for missing cells, mask of cells that are neither a number nor missing)."""
    text = cells.str.strip()
    if decimal != ".":
        text = text.str.replace(decimal, ".", regex=False)
    values = np.array(pd.to_numeric(text, errors="coerce"), dtype=np.float64)  # a copy: pandas may share read-only
    missing = is_missing(cells)
    values[missing] = np.nan
    return values, np.isnan(values) & ~missing


def describe_lines(lines: Sequence[int]) -> str:
    """'lines 3, 7, 9' or 'lines 3, 7, ... (25 in all)' for an error message."""
    shown = ", ".join(str(int(n)) for n in lines[:_MAX_LISTED])
    more = f", ... ({len(lines)} in all)" if len(lines) > _MAX_LISTED else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def read_cells(path: Path, fmt: CsvFormat, names: Sequence[str] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Every cell as stripped text, columns named, and each row's line number in the file.

    ``names`` (default: ``fmt.columns``) names the columns of a headerless file; a header's
    names are replaced by ``fmt.columns`` when both are given. A row with more fields than the
    header fails, naming its line; pandas fills a shorter row's last cells with empty (missing)
    values, which the dataset's missing-value policy then handles.
    """
    frame, long_rows = _tokenise(path, fmt)
    if long_rows:
        detail = "; ".join(long_rows[:_MAX_LISTED])
        raise DataFormatError(
            f"{path}: ragged rows: {detail}" + (f" ({len(long_rows)} ragged rows in all)" if len(long_rows) > 1 else "")
        )
    found = [str(c).strip() for c in frame.columns] if fmt.header else None
    names = list(names if names is not None else fmt.columns or found or [])
    if len(names) != frame.shape[1]:
        where = f"its header has {frame.shape[1]} ({', '.join(found)})" if found else f"it has {frame.shape[1]}"
        raise DataFormatError(f"{path}: source.columns names {len(names)} columns but {where}; the counts must match")
    frame.columns = names
    first_line = 2 if fmt.header else 1
    lines = np.arange(first_line, first_line + len(frame), dtype=np.int64)
    blank = (frame == "").all(axis=1).to_numpy()  # empty lines are not rows (pandas keeps them to keep line numbers)
    frame, lines = frame[~blank].reset_index(drop=True), lines[~blank]
    if frame.empty:
        header = f"has a header ({', '.join(found)}) but" if found else "has"
        raise DataFormatError(f"{path}: {header} no data rows")
    return frame.apply(lambda column: column.str.strip()), lines


def _undecodable(path: Path, encoding: str) -> DataFormatError:
    """Where the file stops being ``encoding``: pandas decodes in chunks, so its error's offset is the chunk's."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
        where = ""
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        where = f" (line {line}: byte {raw[error.start]:#04x} at offset {error.start})"
    return DataFormatError(
        f"{path}: not valid {encoding}{where}; set the dataset's `source.encoding` to the file's encoding, e.g. latin-1"
    )


def count_fields(path: Path, fmt: CsvFormat) -> int:
    """The number of fields of a file's first row."""
    return _tokenise(path, replace(fmt, header=False, columns=("?",)), nrows=1)[0].shape[1]


def _tokenise(path: Path, fmt: CsvFormat, nrows: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """pandas' reading of the file as text cells, and its complaints about rows with too many fields."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                sep=fmt.delimiter,
                header=0 if fmt.header else None,
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                on_bad_lines="warn",
                nrows=nrows,
                index_col=False,  # a delimiter ending every row is an empty last field, not an index column
                encoding="utf-8-sig" if fmt.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else fmt.encoding,
            )
    except FileNotFoundError:
        raise DataFormatError(f"{path}: raw file missing; run the fetch stage first") from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: the file is empty; expected a header row and at least one data row") from None
    except UnicodeDecodeError:
        raise _undecodable(path, fmt.encoding) from None
    except LookupError:
        raise DataConfigError(f"source.encoding={fmt.encoding!r} is not an encoding Python knows") from None
    except pd.errors.ParserError as error:
        raise DataFormatError(f"{path}: not a readable table ({error})") from None
    long_rows = [_ragged(m) for w in caught for m in str(w.message).strip().splitlines()]
    return frame.fillna(""), long_rows


def _ragged(message: str) -> str:
    """pandas' complaint about a row, in the project's words."""
    if message.startswith("Length of header or names does not match"):
        return (
            "every row has more fields than the header (a delimiter at the end of each row?): "
            "remove it, or name the extra column in the header"
        )
    return re.sub(
        r"^Skipping line (\d+): expected (\d+) fields, saw (\d+)", r"line \1 has \3 fields, expected \2", message
    )


@dataclass
class Table:
    """A parsed table: numeric feature columns as float64 (NaN = missing), ``categorical`` ones as text (NA =
    missing), the raw target cells, and the file line of every row."""

    path: Path
    features: pd.DataFrame
    target_name: str
    target: list[str]
    lines: np.ndarray  # int64 (n_rows,)
    categorical: list[str] = field(default_factory=list)
    unknown: str = "error"
    fmt: CsvFormat = field(default_factory=CsvFormat)

    @property
    def feature_names(self) -> list[str]:
        return [str(c) for c in self.features.columns]

    def missing_target_rows(self) -> np.ndarray:
        return is_missing(pd.Series(self.target, dtype=str))

    def missing_feature_rows(self) -> np.ndarray:
        return self.features.isna().any(axis=1).to_numpy()

    def select(self, keep: np.ndarray) -> Table:
        rows = np.flatnonzero(keep) if keep.dtype == bool else keep
        return Table(
            self.path,
            self.features.iloc[rows].reset_index(drop=True),
            self.target_name,
            [self.target[i] for i in rows],
            self.lines[rows],
            self.categorical,
            self.unknown,
            self.fmt,
        )


@dataclass(frozen=True)
class Columns:
    """Which columns of a file the config declares: the target, the features (or those to drop), the categories."""

    target: str | None  # None: the last column (generated and bundled tables put their target last)
    features: Sequence[str] | None = None
    drop: Sequence[str] = ()
    categorical: Sequence[str] = ()
    max_categories: int = 100


def read_table(path: str | Path, columns: Columns, fmt: CsvFormat | None = None, unknown: str = "error") -> Table:
    """Read a table file; every feature column must hold numbers (missing cells allowed) or be ``categorical``."""
    path, fmt = Path(path), fmt or CsvFormat()
    if unknown not in UNKNOWN_POLICIES:
        raise DataConfigError(f"source.unknown={unknown!r}: expected error or ignore")
    cells, lines = read_cells(path, fmt)
    target_name = columns.target or str(cells.columns[-1])
    columns = replace(columns, target=target_name)
    features = _feature_columns(path, list(cells.columns), columns)
    frame = pd.DataFrame(index=cells.index)
    bad: list[str] = []
    for name in features:
        if name in columns.categorical:
            frame[name] = cells[name].where(~is_missing(cells[name]))
            _check_levels(path, frame[name], columns.max_categories)
            continue
        frame[name], not_numbers = parse_numbers(cells[name], fmt.decimal)
        bad += [f"line {lines[i]}, column {name!r}: {cells[name].iat[i]!r}" for i in np.flatnonzero(not_numbers)]
    if bad:
        raise DataFormatError(
            f"{path}: non-numeric feature values ({len(bad)} in all): {'; '.join(bad[:_MAX_LISTED])}. "
            "Every feature column must hold numbers: list a text column under the dataset's "
            "`source.categorical` (one-hot encoded) or `source.drop` (left out)"
            + (", or set `source.decimal: ','` for decimal commas" if fmt.decimal == "." else "")
        )
    target = cells[target_name].tolist()
    return Table(path, frame, target_name, target, lines, list(columns.categorical), unknown, fmt)


def _feature_columns(path: Path, header: list[str], columns: Columns) -> list[str]:
    """The declared feature columns (default: every column but the target and ``drop``), checked against the file."""
    listed = f"columns are: {', '.join(header)}"
    if columns.target not in header:
        raise DataFormatError(
            f"{path}: the target column {columns.target!r} declared in the config is not in the file; {listed}"
        )
    if columns.target in (columns.features or ()) or columns.target in columns.categorical:
        raise DataConfigError(
            f"source.target {columns.target!r} is also listed as a feature: a model would see its answer"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataFormatError(f"{path}: column name(s) {', '.join(duplicated)} appear more than once; {listed}")
    if columns.features is not None and columns.drop:
        raise DataConfigError("source.features and source.drop are alternatives: list the columns to keep, or drop")
    declared = {"features": columns.features or (), "drop": columns.drop, "categorical": columns.categorical}
    for key, names in declared.items():
        unknown = ", ".join(repr(name) for name in names if name not in header)
        if unknown:
            raise DataFormatError(f"{path}: source.{key} names {unknown}, not in the file; {listed}")
    features = (
        list(columns.features)
        if columns.features is not None
        else [name for name in header if name != columns.target and name not in columns.drop]
    )
    stray = [name for name in columns.categorical if name not in features]
    if stray:
        raise DataConfigError(f"source.categorical names {', '.join(stray)}, which are not feature columns")
    if not features:
        raise DataFormatError(f"{path}: no feature columns besides the target {columns.target!r}")
    return features


def _check_levels(path: Path, cells: pd.Series, limit: int) -> None:
    levels = cells.dropna().nunique()
    if levels > limit:
        raise DataFormatError(
            f"{path}: categorical column {cells.name!r} has {levels} distinct values, more than "
            f"source.max_categories={limit}: a one-hot column each would swamp the table. Drop the column "
            "(source.drop), or raise source.max_categories if that many categories are meant"
        )


def apply_missing_policy(table: Table, policy: str) -> Table:
    """Handle rows with missing cells before splitting: ``fail`` names them, ``drop`` removes them.

    ``impute`` only drops rows whose *target* is missing here; missing features are filled
    after the split (numbers with training-split means, see `impute_with_means`; a missing
    category encodes as no category), so no statistic of the validation or test rows leaks
    into training.
    """
    if policy not in MISSING_POLICIES:
        raise DataConfigError(f"missing-value policy {policy!r} is not one of {', '.join(MISSING_POLICIES)}")
    no_target = table.missing_target_rows()
    no_feature = table.missing_feature_rows()
    if policy == "fail":
        incomplete = no_target | no_feature
        if incomplete.any():
            raise DataFormatError(
                f"{table.path}: missing values on {describe_lines(table.lines[incomplete])} (a row with fewer "
                "fields than the header has missing cells too). Fix the file, or set the dataset's "
                "`preprocess.missing` policy to `drop` (remove those rows) or `impute` (fill features with "
                "training-split column means)"
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
        values, bad = parse_numbers(pd.Series(table.target, dtype=str), table.fmt.decimal)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{table.path}: line {table.lines[i]}, target column {table.target_name!r}: {table.target[i]!r} "
                "is not a number, and a regression target must be numeric"
            )
        return values.astype(np.float32), None
    labels = sorted(set(table.target), key=label_sort_key)
    index = {label: i for i, label in enumerate(labels)}
    if len(labels) < 2:
        raise DataFormatError(
            f"{table.path}: target column {table.target_name!r} has a single class ({labels[0]!r}); "
            "classification needs at least two"
        )
    return np.array([index[v] for v in table.target], dtype=np.int64), [_label_name(v) for v in labels]


def label_sort_key(label: str) -> tuple[int, float, str]:
    """Numbers first, in numeric order (2 before 10), then text in alphabetical order."""
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
