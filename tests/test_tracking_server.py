"""logger=mlflow against an `mlflow server` on loopback: SQLite and PostgreSQL backends, proxied artifacts.

Each test starts a real tracking server (``python -m mlflow server``) on a free 127.0.0.1 port,
trains a tiny model with ``MLFLOW_TRACKING_URI`` pointing at it, and reads the run back through
the REST API: params, per-epoch metrics, provenance tags, artifacts (which must land under the
server's ``--artifacts-destination``, not in the client's working directory) and the logged
MLflow model, loaded with ``mlflow.pyfunc`` and asked to predict.

The PostgreSQL test runs a throwaway cluster (``initdb`` in a temporary folder, loopback only,
trust auth) and skips only when no PostgreSQL server binaries are installed; ``.ci/run``
installs them with apt when it can.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.tracking.provenance import git_state
from pipeline.train import train
from tests.conftest import make_cfg
from tests.servers import free_port, tail

SERVER_START_TIMEOUT = 120  # seconds; a cold start (imports, schema migration) takes 5-10 s on 2 cores


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path, logs: Path) -> Iterator[str]:
    """Run `mlflow server` on a free loopback port; yield its URL once /health answers; stop it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / "mlflow-server.out", logs / "mlflow-server.err"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # No background job runner: it forks seven huey consumers the tests don't need.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        # Its own process group: the server runs uvicorn as a child, and teardown stops them all.
        process = subprocess.Popen(
            command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=logs, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with code {process.returncode} before answering "
                    f"{url}/health; its stderr:\n{tail(stderr)}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer {url}/health within {SERVER_START_TIMEOUT} s; "
                    f"its stderr:\n{tail(stderr)}"
                )
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def check_a_run_on_the_server(
    url: str, artifacts: Path, processed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train with the server as tracking URI; everything a run records is on the server and loads back."""
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)  # anything written relative to the working dir would show up here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # what conf/logger/mlflow.yaml reads, as a user would set it
    cfg = make_cfg(
        processed,
        tmp_path,
        "experiment=spirals_mlp",
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={url}",
        "trainer.max_epochs=2",
        "optimizer.lr=0.02",
    )
    metrics = train(cfg)

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("spirals_mlp")
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location  # proxied
    (run,) = client.search_runs([experiment.experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"

    assert run.data.params["optimizer/lr"] == "0.02" and run.data.params["trainer/max_epochs"] == "2"
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    assert len(client.get_metric_history(run_id, "val/loss")) == 2  # one value per epoch
    tags = run.data.tags
    assert tags["git.commit"] == git_state(cfg.paths.root_dir)["git.commit"]
    assert tags["data.name"] == "spirals" and any(key.startswith("data.sha256.") for key in tags)

    top = {artifact.path for artifact in client.list_artifacts(run_id)}
    assert {"config.yaml", "checkpoints", "model_summary.txt"} <= top, top
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", str(downloads))).read_text())
    assert config["optimizer"]["lr"] == 0.02
    (checkpoint,) = client.list_artifacts(run_id, "checkpoints")
    assert checkpoint.path.endswith(".ckpt") and checkpoint.file_size > 0

    # The server stored the files itself, under --artifacts-destination/<experiment>/<run>/artifacts.
    stored = artifacts / experiment.experiment_id / run_id / "artifacts"
    assert (stored / "config.yaml").is_file() and (stored / checkpoint.path).is_file()
    leftovers = [p.name for p in client_dir.iterdir() if p.name in {"mlruns", "mlartifacts", "mlflow.db"}]
    assert not leftovers, f"the client wrote a local store: {leftovers}"

    # The model in MLflow's format (PyTorch flavour, name "model"): it loads from the server and predicts.
    import mlflow.pyfunc

    monkeypatch.chdir(downloads)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    points = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    prediction = np.asarray(model.predict(points))
    assert prediction.shape[0] == 5 and np.isfinite(prediction).all()
    # MLflow 3 keeps a logged model under <experiment>/models/<model id>/: on the server's disk too.
    assert list(artifacts.glob(f"{experiment.experiment_id}/models/*/artifacts/MLmodel"))


# --- SQLite backend --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_lands_on_a_tracking_server(processed, tmp_path, migrated_mlflow_db, monkeypatch):
    database = tmp_path / "server" / "server.db"
    database.parent.mkdir()
    shutil.copyfile(migrated_mlflow_db, database)  # schema already migrated: saves the server 2-3 s
    artifacts = tmp_path / "server" / "artifacts"
    with mlflow_server(f"sqlite:///{database}", artifacts, tmp_path / "server") as url:
        check_a_run_on_the_server(url, artifacts, processed, tmp_path, monkeypatch)


# --- PostgreSQL backend ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_lands_on_a_tracking_server_with_postgresql(processed, tmp_path, postgres_uri, monkeypatch):
    artifacts = tmp_path / "server" / "artifacts"
    with mlflow_server(postgres_uri, artifacts, tmp_path / "server") as url:
        check_a_run_on_the_server(url, artifacts, processed, tmp_path, monkeypatch)
