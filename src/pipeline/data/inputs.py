"""New inputs for a trained model, read as its training data was: what ``pipeline.predict`` feeds it.

Each reader returns raw inputs of shape ``(n, *spec.input_shape)`` (float32: table features or
pixel values 0-255; ``ModelInput`` scales and normalises them inside the model) and a table of
identifiers to carry into the output, one row per input:

- a CSV: rows written as the training table's were (same delimiter, decimal mark, header or
  not), text categories included: each is encoded as its training row was
  (``pipeline.data.encoding``); every other column is carried through;
- a folder of image files (PNG, JPEG, ...; or one file): converted to the model's channels and resized to its
  input size, as the image sources are; the file name is carried through;
- a ``.npy`` array of the input shape (a 1-channel image array may leave its channel axis out);
- for a sequence model, a text file of questions, one per line (``12+345``), checked against the
  characters and length its training questions had (the data spec's ``encoding``); the model
  encodes them itself.

Anything else fails before the model runs, naming the file and what was expected.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.encoding import TableEncoding
from pipeline.data.image_folder import IMAGE_SUFFIXES, decode_image
from pipeline.data.spec import DatasetSpec
from pipeline.data.table import CsvFormat, count_fields, read_cells
from pipeline.errors import DataFormatError


def read_inputs(path: str | Path, spec: DatasetSpec) -> tuple[np.ndarray, pd.DataFrame]:
    """(raw inputs, identifiers) of a CSV, an image folder or file, or a ``.npy`` array."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"input={path}: no such file or folder")
    if spec.task == "sequence":
        return read_questions(path, spec)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return read_images(path, spec)
    if path.suffix.lower() == ".npy":
        return read_array(path, spec)
    if path.suffix.lower() in (".csv", ".txt", ".tsv") or (path.is_file() and spec.feature_names):
        return read_table(path, spec)  # a table model reads any file as its training file was read (auto-mpg.data)
    raise DataFormatError(f"input={path}: expected a .csv table, a .npy array, or images (a file or a folder)")


def read_questions(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, pd.DataFrame]:
    """One question per line of a text file (``12+345``), as text the model reads; the question is carried into
    the output."""
    encoding = spec.encoding or {}
    if encoding.get("kind") != "text" or not path.is_file():
        raise DataFormatError(f"input={path}: a sequence model takes a text file of questions, one per line")
    questions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not questions:
        raise DataFormatError(f"{path}: no questions (expected one per line, e.g. 12+345)")
    for number, question in enumerate(questions, start=1):
        if len(question) > encoding["length"] or set(question) - set(encoding["vocabulary"]):
            raise DataFormatError(
                f"{path}, line {number}: {question!r} is not a question the model reads: at most "
                f"{encoding['length']} characters of {encoding['vocabulary'].strip()!r}"
            )
    return np.asarray(questions, dtype=object), pd.DataFrame({"question": questions})


def read_table(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows in the training file's format, encoded as its rows were (categories one-hot); other columns are
    carried through as identifiers."""
    if len(spec.input_shape) != 1 or not spec.feature_names:
        raise DataFormatError(f"input={path}: a CSV feeds a model trained on a table; this one takes {_shape(spec)}")
    encoding = table_encoding(spec)
    fmt = encoding.fmt
    if path.suffix.lower() == ".tsv":
        fmt = replace(fmt, delimiter="\t")
    cells, lines = read_cells(path, fmt, names=_headerless_names(path, fmt, encoding))
    missing = [name for name in encoding.columns if name not in cells.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing feature column(s) {', '.join(missing)}; the model takes {', '.join(encoding.columns)}"
        )
    features = encoding.transform(cells[list(encoding.columns)], lines, path)
    if np.isnan(features).any():
        row, column = (int(i[0]) for i in np.nonzero(np.isnan(features)))
        raise DataFormatError(f"{path}, line {lines[row]}, column {encoding.feature_names[column]}: a missing value")
    return features.astype(np.float32), cells.drop(columns=list(encoding.columns))


def table_encoding(spec: DatasetSpec) -> TableEncoding:
    """The model's record of its table's columns; models trained before it was recorded took numbers by name."""
    if spec.encoding:
        return TableEncoding.from_record(spec.encoding)
    return TableEncoding(columns=spec.feature_names)


def _headerless_names(path: Path, fmt: CsvFormat, encoding: TableEncoding) -> list[str] | None:
    """A headerless file's column names: the training file's (target included), or only the feature columns."""
    if fmt.header:
        return None
    fields = count_fields(path, fmt)
    for names in (fmt.columns or (), encoding.columns):
        if fields == len(names):
            return list(names)
    raise DataFormatError(
        f"{path}: {fields} fields per row; the model's training file had no header and {len(fmt.columns or ())} "
        f"columns ({', '.join(fmt.columns or ())}), so give rows of all {len(fmt.columns or ())} or of the "
        f"{len(encoding.columns)} feature columns ({', '.join(encoding.columns)})"
    )


def read_images(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, pd.DataFrame]:
    """Every image file of a folder (sorted by name) or one image, as the model's channels and size."""
    if len(spec.input_shape) != 3:
        raise DataFormatError(f"input={path}: images feed a model trained on images; this one takes {_shape(spec)}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(f"input={path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
    images = np.stack([read_image(file, spec.input_shape) for file in files])
    return images, pd.DataFrame({"file": [file.name for file in files]})


def read_image(file: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One image as float32 pixels 0-255 of ``shape`` (channels, height, width), decoded as the preprocess stage
    decodes an image folder's (``pipeline.data.image_folder.decode_image``)."""
    channels, height, width = shape
    if channels not in (1, 3):
        raise DataFormatError(
            f"{file}: the model takes {channels}-channel images; only 1 (grey) or 3 (RGB) can be read"
        )
    return decode_image(file, (height, width), channels).astype(np.float32)


def read_array(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, pd.DataFrame]:
    """A ``.npy`` of ``(n, *input_shape)`` (or ``(n, height, width)`` for one channel)."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise DataFormatError(f"{path}: not a NumPy array file ({error})") from None
    shape = spec.input_shape
    if array.ndim == len(shape) and len(shape) == 3 and shape[0] == 1:
        array = array[:, None]  # (n, H, W) of a one-channel model
    if len(array) == 0:
        raise DataFormatError(f"{path}: an array of no rows")
    if array.shape[1:] != shape or not np.issubdtype(array.dtype, np.number):
        raise DataFormatError(
            f"{path}: an array of shape {array.shape} ({array.dtype}); the model takes {_shape(spec)}"
        )
    return array.astype(np.float32), pd.DataFrame({"row": np.arange(len(array))})


def _shape(spec: DatasetSpec) -> str:
    return f"numbers of shape (n, {', '.join(map(str, spec.input_shape))})"
