"""A user's folder of images in torchvision's ImageFolder layout, read into uint8 arrays.

Two layouts are recognised (``root`` may also be an archive's single wrapping folder around either):

- ``root/<class>/<image>``: one folder per class, no official split (split ``"all"``);
- ``root/train/<class>/<image>`` and ``root/test/<class>/<image>``: the official train and test splits.

Class names are the folder names, sorted; a label is a class's index in that order. Decoding
writes each image straight into a preallocated array (in practice ``np.lib.format.open_memmap``
of the final ``.npy``), one at a time, so memory does not grow with the number of images.

    files = list_image_folder(root)
    paths, labels = files.splits["train"]
    x = np.lib.format.open_memmap(out / "train_x.npy", mode="w+", dtype=np.uint8, shape=(len(paths), 3, 32, 32))
    decode_images(paths, x, (32, 32), channels=3)
    mean, std = channel_statistics(x)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DataConfigError, DataFormatError

log = logging.getLogger(__name__)

# torchvision's IMG_EXTENSIONS (torchvision.datasets.folder), and .gif (its first frame).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLIT_FOLDERS = ("train", "test")
PROGRESS_EVERY = 5000
# macOS's zip tool adds __MACOSX/ beside the archived folder; dot-files (.DS_Store) are hidden too.
_IGNORED = frozenset({"__MACOSX"})
# channel_statistics reads at most this many pixels per chunk (its squares take 8 MiB as uint16).
_CHUNK_PIXELS = 1 << 22


@dataclass
class ImageFiles:
    """A folder's image files and int64 labels per official split (``"all"`` when it has none)."""

    class_names: list[str]
    splits: dict[str, tuple[list[Path], np.ndarray]]


@dataclass
class _Listing:
    """One folder's sub-folders and image files, each sorted by name; other files go to ``skipped``."""

    folders: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def _list_dir(folder: Path) -> _Listing:
    listing = _Listing()
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.name in _IGNORED:
                continue
            if entry.is_dir():
                listing.folders.append(Path(entry.path))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                listing.images.append(Path(entry.path))
            else:
                listing.skipped.append(Path(entry.path))
    listing.folders.sort(key=lambda p: p.name)
    listing.images.sort(key=lambda p: p.name)
    return listing


def list_image_folder(root: Path, max_images_per_class: int | None = None) -> ImageFiles:
    """The image files of ``root`` by split and class, sorted by name so the order never changes.

    ``max_images_per_class`` keeps the first N files of each class in each split (quick trials).
    Files that are not images are skipped with one warning; an empty (0-byte) image, an empty
    class folder, or images beside class folders fail here, before anything is decoded.
    """
    limit = _check_limit(max_images_per_class)
    root = Path(root)
    if not root.is_dir():
        what = "not a folder" if root.exists() else "no such folder"
        raise DataFormatError(f"{root}: {what}; expected a folder with one sub-folder of images per class")
    skipped: list[Path] = []
    root = _unwrap(root, skipped)
    listing = _list_dir(root)
    names = {folder.name for folder in listing.folders}
    if names & set(SPLIT_FOLDERS) and not listing.images:
        skipped += listing.skipped
        files = _split_layout(root, names, limit, skipped)
    else:
        classes = _classes(root, limit, skipped)
        class_names = sorted(classes)
        files = ImageFiles(class_names, {"all": _labelled(classes, class_names)})
    if skipped:
        log.warning("%s: skipped %d files that are not images, e.g. %s", root, len(skipped), skipped[0])
    counts = ", ".join(f"{split} {len(paths)}" for split, (paths, _) in files.splits.items())
    log.info("%s: %d classes, images: %s", root, len(files.class_names), counts)
    return files


def _check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataConfigError(f"source.max_images_per_class={limit!r}: expected a positive whole number or null")
    return limit


def _unwrap(root: Path, skipped: list[Path]) -> Path:
    """Descend through single folders that wrap the dataset (as an archive's top folder does).

    A single folder whose own content is images (no sub-folders) is a class, not a wrapper; a
    single ``train/`` or ``test/`` is kept so that the split layout reports its missing partner.
    """
    while True:
        listing = _list_dir(root)
        if listing.images or len(listing.folders) != 1:
            return root
        inner = listing.folders[0]
        if inner.name in SPLIT_FOLDERS or not _list_dir(inner).folders:
            return root
        log.info("%s: holds only %s/; reading the images inside it", root, inner.name)
        skipped += listing.skipped
        root = inner


def _split_layout(root: Path, names: set[str], limit: int | None, skipped: list[Path]) -> ImageFiles:
    """``train/`` and ``test/`` with the same class folders: every test class must be a train class."""
    missing = [split for split in SPLIT_FOLDERS if split not in names]
    others = sorted(names - set(SPLIT_FOLDERS))
    if missing or others:
        found = ", ".join(f"{name}/" for name in sorted(names))
        raise DataFormatError(
            f"{root}: holds {found}; expected either train/ and test/ only (each with one folder per class) "
            "or one folder per class (the pipeline carves its validation split out of train/)"
        )
    train = _classes(root / "train", limit, skipped)
    test = _classes(root / "test", limit, skipped)
    unknown = sorted(set(test) - set(train))
    if unknown:
        raise DataFormatError(
            f"{root / 'test' / unknown[0]}: class(es) {', '.join(unknown)} in test/ but not in train/; "
            "a model cannot learn a class it never sees: add its training images or remove it from test/"
        )
    untested = sorted(set(train) - set(test))
    if untested:
        log.warning("%s: class(es) %s have no folder in test/; the test split has none of them", root, untested)
    class_names = sorted(train)
    return ImageFiles(class_names, {"train": _labelled(train, class_names), "test": _labelled(test, class_names)})


def _classes(folder: Path, limit: int | None, skipped: list[Path]) -> dict[str, list[Path]]:
    """Each class folder's image files (the first ``limit``), checked for empty folders and 0-byte files."""
    listing = _list_dir(folder)
    skipped += listing.skipped
    if listing.images:
        where = "next to its class folders" if listing.folders else "and no class folders"
        raise DataFormatError(
            f"{folder}: image files directly in it ({len(listing.images)}, e.g. {listing.images[0].name}) {where}; "
            "expected every image inside the folder of its class, e.g. cat/1.png"
        )
    if not listing.folders:
        raise DataFormatError(f"{folder}: no class folders; expected one sub-folder of images per class")
    classes = {}
    for class_folder in listing.folders:
        files = _class_files(class_folder, skipped)
        if not files:
            raise DataFormatError(
                f"{class_folder}: an empty class folder; expected image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        _check_not_empty(files)
        classes[class_folder.name] = files[:limit]
    return classes


def _class_files(folder: Path, skipped: list[Path]) -> list[Path]:
    """A class folder's images, then those of its sub-folders in name order (torchvision reads them too)."""
    listing = _list_dir(folder)
    skipped += listing.skipped
    files = listing.images
    for sub in listing.folders:
        files += _class_files(sub, skipped)
    return files


def _check_not_empty(files: list[Path]) -> None:
    for file in files:
        try:
            size = file.stat().st_size
        except OSError as error:
            raise DataFormatError(f"{file}: cannot be read ({error.strerror})") from None
        if size == 0:
            raise DataFormatError(f"{file}: an empty file (0 bytes); expected an image")


def _labelled(classes: dict[str, list[Path]], class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """All files, class by class in label order, and their int64 labels."""
    index = {name: i for i, name in enumerate(class_names)}
    present = [name for name in class_names if name in classes]
    files = [file for name in present for file in classes[name]]
    labels = np.repeat(np.array([index[name] for name in present], dtype=np.int64), [len(classes[n]) for n in present])
    return files, labels


def decode_images(files: Sequence[Path], out: np.ndarray, image_size: tuple[int, int], channels: int) -> None:
    """Decode ``files`` one by one into ``out[i]`` (uint8, N × channels × H × W), so nothing accumulates.

    Each image is loaded in full (a truncated file fails here, not during training), converted
    to ``L`` (channels=1) or ``RGB`` (channels=3) by Pillow, and resized to ``image_size`` (H, W)
    when its size differs. See ``decode_image`` for what each conversion does.
    """
    height, width = check_image_size(image_size)
    mode = _mode(channels)
    expected = (len(files), channels, height, width)
    if out.shape != expected or out.dtype != np.uint8:
        raise ValueError(f"out is {out.dtype} of shape {out.shape}; expected uint8 of shape {expected}")
    for i, file in enumerate(files):
        out[i] = _decode(Path(file), mode, (width, height))
        if (i + 1) % PROGRESS_EVERY == 0:
            log.info("decoded %d of %d images", i + 1, len(files))


def decode_image(file: Path, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as uint8 of shape (channels, H, W), decoded as ``decode_images`` does.

    - Palette and RGBA images are converted by Pillow: transparency is dropped (a transparent
      pixel keeps its stored colour), not composited on a background.
    - 16-bit grey images (PNG, TIFF: modes ``I;16*``) are scaled to 0-255 first; Pillow's own
      conversion would clip every value above 255 to white.
    - A mode Pillow cannot convert (e.g. a CIELab TIFF read as grey) fails, naming the file.
    - The resize is Pillow's bilinear filter, which widens its support when downscaling (it
      antialiases, unlike ``torch.nn.functional.interpolate`` without ``antialias=True``).
    """
    height, width = check_image_size(image_size)
    return _decode(Path(file), _mode(channels), (width, height))


def _decode(file: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(file) as image:
            image.load()
            original = image.mode
            try:
                converted = _eight_bit(image).convert(mode)
            except (ValueError, OSError) as error:
                raise DataFormatError(f"{file}: a {original} image cannot be converted to {mode} ({error})") from None
    except UnidentifiedImageError:
        what = "an empty file (0 bytes)" if _size(file) == 0 else "not an image Pillow can read"
        raise DataFormatError(f"{file}: {what}; expected one of {', '.join(sorted(IMAGE_SUFFIXES))}") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise DataFormatError(f"{file}: a broken, truncated or unreadable image file ({error})") from None
    if converted.size != size:
        converted = converted.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(converted)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _size(file: Path) -> int | None:
    try:
        return file.stat().st_size
    except OSError:
        return None


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image scaled (rounded) to 8 bits; any other image unchanged."""
    if not image.mode.startswith("I;16"):
        return image
    wide = np.asarray(image).astype(np.uint32)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def check_channels(channels: int) -> int:
    """``source.channels``: 1 (grey) or 3 (RGB)."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise DataConfigError(f"source.channels={channels!r}: expected 1 (grey) or 3 (RGB)")
    return int(channels)


def _mode(channels: int) -> str:
    return "L" if check_channels(channels) == 1 else "RGB"


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """``source.image_size``: [height, width], two positive whole numbers."""
    size = tuple(image_size) if isinstance(image_size, Sequence) and not isinstance(image_size, str) else ()
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise DataConfigError(f"source.image_size={image_size!r}: expected [height, width], two positive whole numbers")
    return size[0], size[1]


def channel_statistics(x: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``x / 255`` over a uint8 N × C × H × W array (memory-mapped or not).

    It reads ``chunk`` images at a time (fewer when they would exceed 4 Mi pixels) and sums
    pixels and squared pixels into uint64, which is exact (no rounding at all up to 2.8e14 pixels
    per channel), so no float copy of the array is made and the variance suffers no cancellation:
    the results are the exact values rounded once to float64.
    """
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) == 0:
        raise ValueError(f"expected a non-empty uint8 array of shape (N, C, H, W), got {x.dtype} {x.shape}")
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: expected a positive number of images")
    rows = max(1, min(chunk, len(x), _CHUNK_PIXELS // max(1, x[0].size)))
    sums = np.zeros(x.shape[1], dtype=np.uint64)
    squares = np.zeros(x.shape[1], dtype=np.uint64)
    buffer = np.empty((rows, *x.shape[1:]), dtype=np.uint16)  # one buffer: no second chunk alive at once
    for start in range(0, len(x), rows):
        block = np.asarray(x[start : start + rows])
        sums += block.sum(axis=(0, 2, 3), dtype=np.uint64)
        squared = np.multiply(block, block, out=buffer[: len(block)], dtype=np.uint16)  # 255² fits in uint16
        squares += squared.sum(axis=(0, 2, 3), dtype=np.uint64)
    count = len(x) * x.shape[2] * x.shape[3]
    # Python ints from here: n·Σx² − (Σx)² is exact, and int / int rounds once.
    means = [int(s) / (255 * count) for s in sums]
    variances = [(count * int(q) - int(s) ** 2) / (65025 * count * count) for s, q in zip(sums, squares, strict=True)]
    stds = [math.sqrt(v) for v in variances]
    return means, stds
