"""Shared fixtures: a loopback HTTP mirror, tiny IDX and CSV files written by the tests, the real-data mirror."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

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


def tiny_digits(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0, size: int = 8,
                learnable: bool = False) -> dict[str, dict[str, str]]:
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

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
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


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path,
                 monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test tracks into its own fresh store (never the project's mlflow.db), in a folder of its own
    so tests that list their tmp_path see only their files.

    MLFLOW_TRACKING_URI is what conf/logger/mlflow.yaml reads; artifacts land beside the
    database, in <store folder>/mlruns.
    """
    db = tmp_path_factory.mktemp("mlflow-store") / "mlflow.db"
    shutil.copyfile(migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
