"""No secret in the record: a database tracking URI's password never reaches params, tags, artifacts or files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.redact import MASK, RedactingFilter, redact, redact_file, redact_text
from tests.conftest import REPO_ROOT
from tests.test_tracking_server import postgres_uri  # noqa: F401  (a throwaway PostgreSQL on loopback)
from tests.test_train import processed  # noqa: F401  (the tiny-datasets fixture)

PASSWORD = "Pw-7f3a9c2e51"


def test_url_passwords_and_secret_keys_are_masked():
    assert redact_text(f"postgresql+psycopg://mlflow:{PASSWORD}@127.0.0.1:5432/db") == \
        "postgresql+psycopg://mlflow:***@127.0.0.1:5432/db"
    assert redact_text("at https://u:p%40ss@host/x and http://host:5000/y") == "at https://u:***@host/x and http://host:5000/y"
    assert redact_text("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"  # nothing to hide
    config = {"logger": {"mlflow": {"tracking_uri": f"mysql://root:{PASSWORD}@db/m"}},
              "db": {"password": PASSWORD, "api_key": "k", "user": "me", "token": None}, "list": [f"s3://a:{PASSWORD}@b"]}
    assert redact(config) == {"logger": {"mlflow": {"tracking_uri": f"mysql://root:{MASK}@db/m"}},
                              "db": {"password": MASK, "api_key": MASK, "user": "me", "token": None},
                              "list": [f"s3://a:{MASK}@b"]}


def test_log_records_and_files_are_masked(tmp_path):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "store at %s", (f"postgresql://u:{PASSWORD}@h/d",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "store at postgresql://u:***@h/d"
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(f"- logger.mlflow.tracking_uri=postgresql://u:{PASSWORD}@h/d\n- +db.password={PASSWORD}\n")
    redact_file(overrides)
    assert PASSWORD not in overrides.read_text() and "u:***@h/d" in overrides.read_text()


def text_files(folder: Path) -> dict[Path, str]:
    found = {}
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                found[path] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                found[path] = path.read_bytes().decode("latin-1")  # binary: still searched byte for byte
    return found


@pytest.mark.slow
def test_a_database_password_reaches_no_param_tag_artifact_or_file(processed, tmp_path, postgres_uri):  # noqa: F811
    # trust authentication accepts any password: the URI carries one, as a user's would
    uri = postgres_uri.replace("mlflow@", f"mlflow:{PASSWORD}@")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.train", f"paths.processed_dir={processed}", f"paths.log_dir={work / 'logs'}",
         "experiment=spirals_mlp", "trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0",
         f"logger.mlflow.tracking_uri={uri}"],  # on the command line too: Hydra's own files see it then
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert PASSWORD not in result.stdout + result.stderr

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("spirals_mlp").experiment_id])
    assert run.data.params["logger/mlflow/tracking_uri"] == postgres_uri.replace("mlflow@", "mlflow:***@")
    for key, value in [*run.data.params.items(), *run.data.tags.items()]:
        assert PASSWORD not in key + value, key
    downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    artifacts = text_files(downloaded)
    assert any(path.name == "config.yaml" for path in artifacts) and len(artifacts) > 5
    run_folder = text_files(work / "logs")
    assert any(path.name == "overrides.yaml" for path in run_folder) and any(p.suffix == ".log" for p in run_folder)
    leaks = [str(path) for path, text in {**artifacts, **run_folder}.items() if PASSWORD in text]
    assert not leaks, f"the password is in {leaks}"
