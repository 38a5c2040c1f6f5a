"""Shared fixtures and helpers: tiny datasets and composed configs, tracking stores, a loopback HTTP mirror,
tiny IDX files written by the tests, the real-data mirror."""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.server
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

if TYPE_CHECKING:
    from mlflow.entities import Run

REPO_ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Encode a uint8 array as an IDX file."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tiny_digits(
    folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0, size: int = 8, learnable: bool = False
) -> dict[str, dict[str, str]]:
    """Write an MNIST-like dataset (size x size images, 10 classes) as IDX files; return a `files:` config block.

    Pixels are noise; with ``learnable`` each class also has its own bright row band, so a model can learn it.
    """
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        if learnable:
            images //= 3
            rows = (labels.astype(int) * size) // 10
            images[np.arange(n), rows, :] = 255
        role = "train" if split == "train" else "test"
        for kind, array in (("images", images), ("labels", labels)):
            name = f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            path = write_idx(folder / name, array)
            files[f"{role}_{kind}"] = {"name": name, "md5": md5(path)}
    return files


class _MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror folder; paths under /drop/ announce the full length but send half and hang up."""

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/drop/"):
            path = Path(self.directory) / self.path.removeprefix("/drop/")
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def http_mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of an HTTP server on 127.0.0.1 serving a temporary folder."""
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **k: _MirrorHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="session")
def real_mirror() -> Path:
    """The offline mirror of the official MNIST/Fashion-MNIST files, from $PIPELINE_DATA_MIRROR (make sets it)."""
    mirror = os.environ.get("PIPELINE_DATA_MIRROR")
    if not mirror or not (Path(mirror) / "mnist").is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI needs PIPELINE_DATA_MIRROR pointing at the offline data mirror (make test sets it)")
        pytest.skip("PIPELINE_DATA_MIRROR does not point at a folder with mnist/ in it")
    return Path(mirror)


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """One SQLite MLflow database with its schema migrated (2-3 s), copied by every test that logs."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session", autouse=True)
def untracked_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Where a test that trains with logger=mlflow without asking for ``mlflow_store`` tracks: a throwaway
    store of the session, so no test ever writes to the project's mlflow.db."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('untracked') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture
def mlflow_store(
    tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh store of the test's own, for tests that read what was tracked, in a folder of its own so tests
    that list their tmp_path see only their files.

    MLFLOW_TRACKING_URI is what conf/logger/mlflow.yaml reads; artifacts land beside the
    database, in <store folder>/mlruns.
    """
    db = tmp_path_factory.mktemp("mlflow-store") / "mlflow.db"
    shutil.copyfile(migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


# --- tiny datasets and composed configs ------------------------------------------------------------

SPLIT = {"val_size": 0.2, "test_size": 0.2, "seed": 0, "missing": "fail"}


@pytest.fixture(scope="session")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny preprocessed datasets named like the real ones, so the real configs apply unchanged (read-only)."""
    from pipeline.data.preparing import preprocess_dataset
    from pipeline.data.sources import GeneratedTable, IdxImages
    from pipeline.data.synthetic import blobs, line, spirals

    root = tmp_path_factory.mktemp("data")
    for name, task, generator in (
        ("blobs", "classification", blobs),
        ("line", "regression", line),
        ("spirals", "classification", spirals),
    ):
        source = GeneratedTable(lambda rng, g=generator: g(rng, n_samples=200), seed=0)
        source.fetch(root / "raw" / name)
        preprocess_dataset(source, name, task, root / "raw" / name, root / "processed" / name, SPLIT)
    files = tiny_digits(root / "mirror" / "tiny", n_train=120, n_test=40, size=16, learnable=True)
    images = IdxImages(folder="tiny", files=files, class_names=[str(i) for i in range(10)], image_shape=(16, 16))
    for name in ("mnist", "fashion_mnist"):  # the same tiny digits stand in for both image datasets
        images.fetch(root / "raw" / name, mirror=str(root / "mirror"))
        preprocess_dataset(
            images, name, "classification", root / "raw" / name, root / "processed" / name, {"val_size": 20, "seed": 0}
        )
    from pipeline.data.cifar import Cifar10
    from pipeline.data.sources import build_source
    from tests.test_cifar import ARCHIVE, md5, official_batches, write_archive

    archive = write_archive(root / "mirror" / "cifar10" / ARCHIVE, official_batches())
    cifar = Cifar10(folder="cifar10", archive={"name": ARCHIVE, "md5": md5(archive)})
    cifar.fetch(root / "raw" / "cifar10", mirror=str(root / "mirror"))
    preprocess_dataset(
        cifar,
        "cifar10",
        "classification",
        root / "raw/cifar10",
        root / "processed/cifar10",
        {"val_size": 10, "seed": 0},
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        auto_mpg = build_source(compose("prepare", overrides=["data=auto_mpg"]).data.source, "auto_mpg")
    auto_mpg.fetch(root / "raw/auto_mpg", mirror=str(REPO_ROOT / "tests/data"))  # the copy shipped as a mirror
    split = {**SPLIT, "missing": "drop", "scale_target": True}
    preprocess_dataset(auto_mpg, "auto_mpg", "regression", root / "raw/auto_mpg", root / "processed/auto_mpg", split)
    from pipeline.data.sequences import AdditionSums

    sums = AdditionSums(digits=3, count=400, seed=0)
    sums.fetch(root / "raw/addition")
    split = {"val_size": 50, "test_size": 50, "seed": 0, "reverse_question": True}
    preprocess_dataset(sums, "addition", "sequence", root / "raw/addition", root / "processed/addition", split)
    return root / "processed"


def make_cfg(processed: Path, tmp_path: Path, *overrides: str) -> DictConfig:
    """The composed ``train`` config, as ``python -m pipeline.train <overrides>`` would run it, on ``processed``
    data with its run folder ``tmp_path/run``. Without a ``logger=`` override it logs to CSV only: a test
    that reads what MLflow tracked says ``logger=mlflow`` (and asks for ``mlflow_store``)."""
    GlobalHydra.instance().clear()
    logger = [] if any(o.startswith("logger=") for o in overrides) else ["logger=csv"]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.processed_dir={processed}",
                f"paths.log_dir={tmp_path}",
                "callbacks.progress_bar.refresh_rate=0",
                *logger,
                *overrides,
            ],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig().set_config(cfg)
    return cfg


def train_command(processed: Path, logs: Path, *overrides: str, multirun: bool = False) -> list[str]:
    """``python -m pipeline.train`` as a user types it, on ``processed`` data, logging under ``logs``."""
    return [
        sys.executable,
        "-m",
        "pipeline.train",
        *(["-m"] if multirun else []),
        f"paths.processed_dir={processed}",
        f"paths.log_dir={logs}",
        *overrides,
    ]


def history(path: Path) -> list[dict[str, str]]:
    """The rows of a history CSV (EpochHistory's), as strings."""
    with open(path) as fh:
        return list(csv.DictReader(fh))


def only_run(store: str, experiment: str) -> Run:
    """The one run of ``experiment`` in ``store`` (a test that tracked one run)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


@pytest.fixture
def postgres_uri() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with an empty database; yields its SQLAlchemy URI."""
    from tests.servers import postgres_cluster

    with postgres_cluster() as uri:
        yield uri
