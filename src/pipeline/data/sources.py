"""Where each dataset's raw files come from, and how they are read back.

A dataset config names one source class under ``source._target_``; Hydra instantiates
it with the rest of that block. Every source can ``fetch`` its raw files into a folder
(download, copy or generate) and ``load`` them back as validated arrays. A new kind of
source is a new class here (or anywhere importable) and a YAML file under ``conf/data/``.
"""

from __future__ import annotations

import csv
import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.atomic import atomic_dir, atomic_open
from pipeline.data.download import fetch_file, is_url, optional_checksum, required_checksum, verify_checksum
from pipeline.data.idx import read_idx_pair
from pipeline.data.synthetic import Generated
from pipeline.data.table import Columns, CsvFormat, Table, read_table
from pipeline.errors import DataConfigError, DataError, DataFormatError, build

if TYPE_CHECKING:
    from pipeline.data.image_folder import ImageFiles

log = logging.getLogger(__name__)

TABLE_FILE = "table.csv"
IMAGES_FOLDER = "images"  # where an ImageFolder source puts the images in its raw folder


@dataclass
class ImageData:
    """Official train and test splits of an image dataset, as uint8 arrays and int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: list[str]


class Source(ABC):
    """Fetches a dataset's raw files into ``raw_dir`` and loads them back."""

    @abstractmethod
    def fetch(self, raw_dir: Path, mirror: str | None = None, timeout: float = 30.0) -> None:
        """Put every raw file in ``raw_dir``; leave nothing half-written on failure."""

    @abstractmethod
    def load(self, raw_dir: Path) -> ImageData | ImageFolderData | Table:
        """Parse and validate the raw files."""


def build_source(config: Any, dataset: str) -> Source:
    """The ``data.source`` of a dataset config; a config mistake surfaces as a DataError naming the dataset."""
    source = build(config, error=DataConfigError, where=f"data.source of dataset {dataset!r}")
    if not isinstance(source, Source):
        raise DataError(
            f"data.source._target_ {config['_target_']!r} of dataset {dataset!r} is not a pipeline.data.sources.Source"
        )
    return source


class IdxImages(Source):
    """The four IDX files of an MNIST-like dataset, from a mirror or the public URLs."""

    ROLES = ("train_images", "train_labels", "test_images", "test_labels")

    def __init__(
        self,
        folder: str,
        files: Mapping[str, Mapping[str, str]],
        class_names: Sequence[str],
        image_shape: Sequence[int] = (28, 28),
        urls: Sequence[str] = (),
    ) -> None:
        missing = [role for role in self.ROLES if role not in files]
        if missing:
            raise DataConfigError(f"source.files lacks {', '.join(missing)}; it needs all of {', '.join(self.ROLES)}")
        self.folder = folder
        self.files = {role: dict(files[role]) for role in self.ROLES}
        self.checksums = {role: required_checksum(spec, f"source.files.{role}") for role, spec in self.files.items()}
        self.class_names = [str(c) for c in class_names]
        self.image_shape = tuple(int(s) for s in image_shape)
        self.urls = list(urls)

    def fetch(self, raw_dir: Path, mirror: str | None = None, timeout: float = 30.0) -> None:
        for role in self.ROLES:
            fetch_file(
                self.files[role]["name"],
                raw_dir,
                self.checksums[role],
                folder=self.folder,
                mirror=mirror,
                urls=self.urls,
                timeout=timeout,
            )

    def load(self, raw_dir: Path) -> ImageData:
        paths = {role: raw_dir / self.files[role]["name"] for role in self.ROLES}
        for role, path in paths.items():
            if not path.is_file():
                raise DataFormatError(f"{path}: raw file missing; run the fetch stage first")
            verify_checksum(path, self.checksums[role])
        train_x, train_y = read_idx_pair(paths["train_images"], paths["train_labels"], self.image_shape)
        test_x, test_y = read_idx_pair(paths["test_images"], paths["test_labels"], self.image_shape)
        for path, labels in ((paths["train_labels"], train_y), (paths["test_labels"], test_y)):
            if labels.size and labels.max() >= len(self.class_names):
                raise DataFormatError(
                    f"{path}: label {int(labels.max())} is out of range for the "
                    f"{len(self.class_names)} class_names in the config"
                )
        return ImageData(train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64), self.class_names)


class TableSource(Source):
    """A table in ``raw_dir/table.csv``; subclasses decide how it gets there. Generated and bundled tables put
    their target last, so ``target`` may be left out for them."""

    def __init__(
        self,
        target: str | None = None,
        features: Sequence[str] | None = None,
        drop: Sequence[str] = (),
        categorical: Sequence[str] = (),
        unknown: str = "error",
        max_categories: int = 100,
        header: bool = True,
        columns: Sequence[str] | None = None,
        delimiter: str = ",",
        encoding: str = "utf-8",
        decimal: str = ".",
    ) -> None:
        self.target = target
        self.features = list(features) if features is not None else None
        self.drop, self.categorical = list(drop or ()), list(categorical or ())
        self.unknown, self.max_categories = unknown, int(max_categories)
        self.format = CsvFormat(delimiter, bool(header), tuple(columns) if columns else None, encoding, decimal)

    def load(self, raw_dir: Path) -> Table:
        path = raw_dir / TABLE_FILE
        if not path.is_file():
            raise DataFormatError(f"{path}: raw file missing; run the fetch stage first")
        columns = Columns(self.target, self.features, self.drop, self.categorical, self.max_categories)
        return read_table(path, columns, self.format, self.unknown)


def write_table_csv(
    dest: Path, x: np.ndarray, y: Sequence[object], feature_names: Sequence[str], target_name: str
) -> None:
    """Write features and target as CSV, atomically; floats keep 10 significant digits."""
    with atomic_open(dest, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*feature_names, target_name])
        for row, target in zip(x, y, strict=True):
            cells = [f"{v:.10g}" for v in row]
            cells.append(f"{target:.10g}" if isinstance(target, float | np.floating) else str(target))
            writer.writerow(cells)


class CsvTable(TableSource):
    """Any table file, from a local path or a URL; its target column is declared in the config.

    The reading keys (``header``, ``columns``, ``delimiter``, ``encoding``, ``decimal``) and the
    column keys (``features`` or ``drop``, ``categorical`` with ``unknown`` and ``max_categories``)
    are those of `TableSource`; README, *Add your own dataset*, shows each.
    """

    def __init__(
        self,
        target: str,
        path: str | None = None,
        url: str | None = None,
        sha256: str | None = None,
        md5: str | None = None,
        folder: str | None = None,
        **reading: Any,
    ) -> None:
        super().__init__(target=target, **reading)
        if bool(path) == bool(url):
            raise DataConfigError("a CSV source needs exactly one of `path` (a local file) or `url`")
        self.path, self.url = path, url
        self.checksum = optional_checksum(sha256, md5)
        self.folder = folder

    def fetch(self, raw_dir: Path, mirror: str | None = None, timeout: float = 30.0) -> None:
        if self.path:
            self._copy_local(Path(self.path), raw_dir / TABLE_FILE)
            return
        assert self.url is not None
        base, _, name = self.url.rpartition("/")
        fetched = fetch_file(
            name,
            raw_dir,
            self.checksum,
            folder=self.folder or "",
            mirror=mirror if self.folder else None,
            urls=[base],
            timeout=timeout,
        )
        fetched.replace(raw_dir / TABLE_FILE)

    def _copy_local(self, source: Path, dest: Path) -> None:
        if is_url(str(source)) or not source.is_file():
            raise DataFormatError(f"{source}: CSV file not found (the config's `path`, relative to the project root)")
        with atomic_open(dest, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
        if self.checksum is not None:
            try:
                verify_checksum(dest, self.checksum, shown=source)
            except DataFormatError:
                dest.unlink()
                raise


class SklearnTable(TableSource):
    """A real table bundled inside scikit-learn (works offline): diabetes, breast_cancer, wine, iris."""

    LOADERS = ("diabetes", "breast_cancer", "wine", "iris")

    def __init__(self, loader: str) -> None:
        super().__init__()
        if loader not in self.LOADERS:
            raise DataConfigError(f"source.loader {loader!r} is not one of {', '.join(self.LOADERS)}")
        self.loader = loader

    def fetch(self, raw_dir: Path, mirror: str | None = None, timeout: float = 30.0) -> None:
        import sklearn.datasets

        loader = getattr(sklearn.datasets, f"load_{self.loader}")
        bunch = loader(scaled=False) if self.loader == "diabetes" else loader()
        names = getattr(bunch, "target_names", None)
        target = [str(names[i]) for i in bunch.target] if names is not None else [float(v) for v in bunch.target]
        write_table_csv(raw_dir / TABLE_FILE, bunch.data, target, list(bunch.feature_names), "target")


class GeneratedTable(TableSource):
    """A teaching dataset drawn from ``generator(rng)`` with a fixed seed, written as CSV."""

    def __init__(self, generator: Callable[[np.random.Generator], Generated], seed: int = 0) -> None:
        super().__init__()
        self.generator = generator
        self.seed = seed

    def fetch(self, raw_dir: Path, mirror: str | None = None, timeout: float = 30.0) -> None:
        x, y, feature_names, target_name = self.generator(np.random.default_rng(self.seed))
        values: list[object] = [float(v) for v in y] if np.issubdtype(y.dtype, np.floating) else [int(v) for v in y]
        write_table_csv(raw_dir / TABLE_FILE, x, values, feature_names, target_name)


@dataclass
class ImageFolderData:
    """A listed image folder and the size and channels its images are decoded to (in the preprocess stage)."""

    files: ImageFiles
    image_size: tuple[int, int]
    channels: int


class ImageFolder(Source):
    """Images in class folders (torchvision's ImageFolder layout), from a local folder, a ``.zip``/``.tar.gz``
    archive or a URL to one; the fetch stage puts the images in ``raw_dir/images``.

    ``sha256`` (or ``md5``) pins an archive's bytes, and ``folder`` names its place in a mirror
    (``<mirror>/<folder>/<file>``), as for the IDX sources. Archives are extracted safely
    (``pipeline.data.archives``: no entry lands outside, at most ``max_unpacked_mb``). The
    preprocess stage decodes each image once, to ``image_size`` (H, W) and ``channels`` (1 or 3).
    """

    def __init__(
        self,
        image_size: Sequence[int],
        channels: int = 3,
        path: str | None = None,
        url: str | None = None,
        sha256: str | None = None,
        md5: str | None = None,
        folder: str | None = None,
        max_images_per_class: int | None = None,
        max_unpacked_mb: float = 2048,
    ) -> None:
        if bool(path) == bool(url):
            raise DataConfigError("an image folder source needs exactly one of `path` (a folder or archive) or `url`")
        from pipeline.data.image_folder import check_channels, check_image_size

        self.image_size = check_image_size(list(image_size))  # what the decoder will be given, checked now
        self.channels = check_channels(channels)
        self.path, self.url, self.folder = path, url, folder
        self.checksum = optional_checksum(sha256, md5)
        self.max_images_per_class = max_images_per_class
        self.max_unpacked_bytes = int(float(max_unpacked_mb) * 2**20)

    def fetch(self, raw_dir: Path, mirror: str | None = None, timeout: float = 30.0) -> None:
        from pipeline.data.archives import archive_kind, extract_archive

        images = raw_dir / IMAGES_FOLDER
        if self.path and Path(self.path).is_dir():
            with atomic_dir(images) as tmp:
                shutil.copytree(self.path, tmp, dirs_exist_ok=True)
            return
        if self.path:
            archive = Path(self.path)
            if not archive.is_file():
                raise DataFormatError(f"{archive}: no such folder or archive (the config's `path`)")
            try:
                archive_kind(archive)
            except DataFormatError as error:
                raise DataFormatError(f"{error}; the config's `path` names a folder of images or an archive") from None
            if self.checksum is not None:
                verify_checksum(archive, self.checksum)
            extract_archive(archive, images, self.max_unpacked_bytes)
            return
        assert self.url is not None
        base, _, name = self.url.rpartition("/")
        archive_kind(Path(name))
        mirror = mirror if self.folder else None  # a user's archive is in a mirror only where its `folder` says
        fetched = fetch_file(
            name, raw_dir, self.checksum, folder=self.folder or "", mirror=mirror, urls=[base], timeout=timeout
        )
        try:
            extract_archive(fetched, images, self.max_unpacked_bytes)
        finally:
            fetched.unlink()  # the extracted images are the stage's output; the archive would double it

    def load(self, raw_dir: Path) -> ImageFolderData:
        from pipeline.data.image_folder import list_image_folder

        images = raw_dir / IMAGES_FOLDER
        if not images.is_dir():
            raise DataFormatError(f"{images}: not found; run the fetch stage first")
        files = list_image_folder(images, self.max_images_per_class)
        return ImageFolderData(files, self.image_size, self.channels)
