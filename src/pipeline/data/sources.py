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
from typing import Any

import numpy as np

from pipeline.atomic import atomic_open
from pipeline.data.download import Checksum, fetch_file, file_digest, is_url
from pipeline.data.idx import read_idx_pair
from pipeline.data.synthetic import Generated
from pipeline.data.table import Table, read_table
from pipeline.errors import DataConfigError, DataError, DataFormatError, build

log = logging.getLogger(__name__)

TABLE_FILE = "table.csv"


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
    def load(self, raw_dir: Path) -> ImageData | Table:
        """Parse and validate the raw files."""


def build_source(config: Any, dataset: str) -> Source:
    """The ``data.source`` of a dataset config; a config mistake surfaces as a DataError naming the dataset."""
    source = build(config, error=DataConfigError, where=f"data.source of dataset {dataset!r}")
    if not isinstance(source, Source):
        raise DataError(
            f"data.source._target_ {config['_target_']!r} of dataset {dataset!r} is not a pipeline.data.sources.Source"
        )
    return source


def _checksum(spec: Mapping[str, str], where: str) -> Checksum:
    for algorithm in ("sha256", "md5"):
        if spec.get(algorithm):
            return Checksum(algorithm, str(spec[algorithm]).lower())
    raise DataConfigError(f"{where}: give the file's official checksum as `sha256` or `md5`")


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
        self.checksums = {role: _checksum(spec, f"source.files.{role}") for role, spec in self.files.items()}
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
            actual = file_digest(path, self.checksums[role].algorithm)
            if actual != self.checksums[role].hexdigest:
                raise DataFormatError(f"{path}: checksum mismatch: expected {self.checksums[role]}, got {actual}")
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
    """A CSV table in ``raw_dir/table.csv``; subclasses decide how it gets there."""

    def __init__(self, target: str | None = None, features: Sequence[str] | None = None, delimiter: str = ",") -> None:
        self.target = target
        self.features = list(features) if features is not None else None
        self.delimiter = delimiter

    def load(self, raw_dir: Path) -> Table:
        path = raw_dir / TABLE_FILE
        if not path.is_file():
            raise DataFormatError(f"{path}: raw file missing; run the fetch stage first")
        target = self.target
        if target is None:  # generated and bundled tables put the target last
            with open(path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh, delimiter=self.delimiter), [])
            if not header:
                raise DataFormatError(f"{path}: the file is empty; expected a header row")
            target = header[-1].strip()
        return read_table(path, target=target, features=self.features, delimiter=self.delimiter)


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
    """Any CSV, from a local path or a URL; its target column is declared in the config."""

    def __init__(
        self,
        target: str,
        path: str | None = None,
        url: str | None = None,
        sha256: str | None = None,
        md5: str | None = None,
        features: Sequence[str] | None = None,
        delimiter: str = ",",
        folder: str | None = None,
    ) -> None:
        super().__init__(target=target, features=features, delimiter=delimiter)
        if bool(path) == bool(url):
            raise DataConfigError("a CSV source needs exactly one of `path` (a local file) or `url`")
        self.path, self.url = path, url
        self.checksum = Checksum("sha256", sha256.lower()) if sha256 else Checksum("md5", md5.lower()) if md5 else None
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
            actual = file_digest(dest, self.checksum.algorithm)
            if actual != self.checksum.hexdigest:
                dest.unlink()
                raise DataFormatError(f"{source}: checksum mismatch: expected {self.checksum}, got {actual}")


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
