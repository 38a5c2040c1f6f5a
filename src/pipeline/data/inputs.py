"""New inputs for a trained model, read as its training data was: what ``pipeline.predict`` feeds it.

Each reader returns raw inputs of shape ``(n, *spec.input_shape)`` (float32: table features or
pixel values 0-255; ``ModelInput`` scales and normalises them inside the model) and a table of
identifiers to carry into the output, one row per input:

- a CSV: the training table's feature columns, by name, in any order; every other column is
  carried through;
- a folder of PNG/JPEG files (or one file): converted to the model's channels and resized to its
  input size, as the image sources are; the file name is carried through;
- a ``.npy`` array of the input shape (a 1-channel image array may leave its channel axis out).

Anything else fails before the model runs, naming the file and what was expected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.spec import DatasetSpec
from pipeline.errors import DataFormatError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_inputs(path: str | Path, spec: DatasetSpec) -> tuple[np.ndarray, pd.DataFrame]:
    """(raw inputs, identifiers) of a CSV, an image folder or file, or a ``.npy`` array."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"input={path}: no such file or folder")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return read_images(path, spec)
    if path.suffix.lower() == ".npy":
        return read_array(path, spec)
    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        return read_table(path, spec)
    raise DataFormatError(f"input={path}: expected a .csv table, a .npy array, or PNG/JPEG images (a file or a folder)")


def read_table(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, pd.DataFrame]:
    """The feature columns by name (every one must be there and numeric); the other columns as identifiers."""
    if len(spec.input_shape) != 1 or not spec.feature_names:
        raise DataFormatError(f"input={path}: a CSV feeds a model trained on a table; this one takes {_shape(spec)}")
    try:
        separator = "\t" if path.suffix.lower() == ".tsv" else ","
        table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path}: not a readable CSV table ({error})") from None
    table.columns = table.columns.str.strip()  # as the training table's header was read
    if table.empty:
        raise DataFormatError(f"{path}: a header and no rows")
    missing = [name for name in spec.feature_names if name not in table.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing feature column(s) {', '.join(missing)}; the model takes {', '.join(spec.feature_names)}"
        )
    features = table[list(spec.feature_names)]
    numbers = features.apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        name = spec.feature_names[column]
        raise DataFormatError(f"{path}, line {row + 2}, column {name}: {features.iat[row, column]!r} is not a number")
    identifiers = table.drop(columns=list(spec.feature_names))
    return numbers.to_numpy(dtype=np.float32), identifiers


def read_images(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, pd.DataFrame]:
    """Every PNG/JPEG of a folder (sorted by name) or one image, as the model's channels and size."""
    if len(spec.input_shape) != 3:
        raise DataFormatError(f"input={path}: images feed a model trained on images; this one takes {_shape(spec)}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(f"input={path}: no .png, .jpg or .jpeg files in the folder")
    images = np.stack([read_image(file, spec.input_shape) for file in files])
    return images, pd.DataFrame({"file": [file.name for file in files]})


def read_image(file: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One image as float32 pixels 0-255 of ``shape`` (channels, height, width): grey or RGB, resized."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    if channels not in (1, 3):
        raise DataFormatError(
            f"{file}: the model takes {channels}-channel images; only 1 (grey) or 3 (RGB) can be read"
        )
    try:
        with Image.open(file) as image:
            converted = image.convert("L" if channels == 1 else "RGB")
            if converted.size != (width, height):
                converted = converted.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as error:
        raise DataFormatError(f"{file}: not a readable image ({error})") from None
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


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
