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
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.tracking.provenance import git_state
from pipeline.train import train
from tests.conftest import make_cfg, train_command
from tests.servers import free_port, serving

TEXT = {".yaml", ".json", ".txt", ".csv", ".log", ".md"}  # files a secret could be written into


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str, artifacts: Path, logs: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run `mlflow server` (with ``options``, and ``env`` added to its environment) on a free loopback port;
    yield its URL once /health answers; stop it after."""
    port = free_port()
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
        *options,
    ]
    # No background job runner: it forks seven huey consumers the tests don't need.
    server_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    server_env.pop("MLFLOW_TRACKING_URI", None)
    with serving(command, f"http://127.0.0.1:{port}", logs, server_env) as url:
        yield url


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


# --- a team server with logins (MLflow's basic-auth app) -------------------------------------------


@pytest.mark.slow
def test_a_server_with_logins_admits_its_users_only(processed, tmp_path, postgres_uri, monkeypatch):
    """`mlflow server --app-name basic-auth` on PostgreSQL: a user trains with its credentials; without them
    the training stops before any work, naming the server; another user denied the experiment cannot read
    it; no password reaches a param, tag, artifact or file of the run."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    secrets = {name: f"{name}-{os.urandom(8).hex()}" for name in ("admin", "alice", "bob")}  # >= 12 characters
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'users.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets["admin"],  # the first start creates the admin with it
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
    }
    artifacts = tmp_path / "server" / "artifacts"
    with mlflow_server(postgres_uri, artifacts, tmp_path / "server", "--app-name", "basic-auth", env=env) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["admin"])
        users = get_app_client("basic-auth", tracking_uri=url)
        for name in ("alice", "bob"):
            users.create_user(name, secrets[name])

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["alice"])
        overrides = ["experiment=spirals_mlp", "trainer.max_epochs=1", "logger=mlflow", "callbacks=no_figures"]
        train(make_cfg(processed, tmp_path / "alice", *overrides, "task_name=alice_exp"))
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("alice_exp")
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED" and run.info.user_id == "alice"

        anonymous = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        command = train_command(processed, tmp_path / "anonymous", *overrides, "task_name=alice_exp")
        result = subprocess.run(
            command, env={**anonymous, "MLFLOW_TRACKING_URI": url}, capture_output=True, text=True, timeout=300
        )
        output = result.stdout + result.stderr  # Hydra's job logging writes to stdout
        assert result.returncode == 1 and "Traceback" not in output, output[-2000:]
        assert f"ConfigError: the MLflow server {url} wants a login (UNAUTHENTICATED)" in output

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["admin"])
        users.grant_user_permission("bob", "experiment", experiment.experiment_id, "DENY")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["bob"])
        with pytest.raises(MlflowException) as refused:
            MlflowClient(url).get_experiment(experiment.experiment_id)
        assert refused.value.error_code == "PERMISSION_DENIED"

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secrets["alice"])
        assert len(MlflowClient(url).search_runs([experiment.experiment_id])) == 1  # the refused one never started
        run = MlflowClient(url).get_run(run.info.run_id)
        recorded = [*run.data.params.values(), *run.data.tags.values()]
        for folder in (artifacts, tmp_path / "alice"):  # what the server stored, and the run folder
            recorded += [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT]
        assert not [text for text in recorded for secret in secrets.values() if secret in text]
