"""No secret in the record: a database tracking URI's password never reaches params, tags, artifacts or files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.redact import MASK, redact, redact_file, redact_logging, redact_text

PASSWORD = "Pw/7f?3a9c2e51"  # '/' and '?' are legal in a database URI's password (SQLAlchemy takes them as they are)


def test_url_passwords_and_secret_keys_are_masked():
    assert (
        redact_text(f"postgresql+psycopg://mlflow:{PASSWORD}@127.0.0.1:5432/db")
        == "postgresql+psycopg://mlflow:***@127.0.0.1:5432/db"
    )
    assert (
        redact_text("at https://u:p%40ss@host/x and http://host:5000/y")
        == "at https://u:***@host/x and http://host:5000/y"
    )
    assert redact_text("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"  # nothing to hide
    assert redact_text("http://127.0.0.1:5000/#/experiments lr=0.1") == "http://127.0.0.1:5000/#/experiments lr=0.1"
    assert redact_text(f"- +db.password={PASSWORD}\n- seed=1") == "- +db.password=***\n- seed=1"
    assert redact_text("pad_token: <pad>\nauth_token: abc") == "pad_token: <pad>\nauth_token: '***'"
    config = {
        "logger": {"mlflow": {"tracking_uri": f"mysql://root:{PASSWORD}@db/m"}},
        "db": {"password": PASSWORD, "api_key": ["k1", "k2"], "user": "me", "token": None},
        "list": [f"s3://a:{PASSWORD}@b"],
        "tokenizer": {"pad_token": "<pad>"},
    }
    assert redact(config) == {
        "logger": {"mlflow": {"tracking_uri": f"mysql://root:{MASK}@db/m"}},
        "db": {"password": MASK, "api_key": MASK, "user": "me", "token": None},
        "list": [f"s3://a:{MASK}@b"],
        "tokenizer": {"pad_token": "<pad>"},
    }


def test_log_records_and_files_are_masked(tmp_path):
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("test_secrets.isolated")
    logger.propagate, handler = False, Keep()
    logger.addHandler(handler)
    factory = logging.getLogRecordFactory()
    try:
        redact_logging()
        redact_logging()  # idempotent
        logger.warning("store at %s", f"postgresql://u:{PASSWORD}@h/d")
        try:
            raise RuntimeError(f"cannot reach postgresql://u:{PASSWORD}@h/d")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logging.setLogRecordFactory(factory)
        logger.removeHandler(handler)
    assert records[0] == "store at postgresql://u:***@h/d"
    assert "Traceback" in records[1] and "u:***@h/d" in records[1] and PASSWORD not in "".join(records)

    hydra_config = tmp_path / "config.yaml"  # as Hydra writes it: it must stay YAML
    hydra_config.write_text(f"db:\n  password: {PASSWORD}\n  uri: postgresql://u:{PASSWORD}@h/d\n  name: x\n")
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(f"- logger.mlflow.tracking_uri=postgresql://u:{PASSWORD}@h/d\n- +db.password={PASSWORD}\n")
    for path in (hydra_config, overrides):
        redact_file(path)
        assert PASSWORD not in path.read_text()
    assert yaml.safe_load(hydra_config.read_text()) == {
        "db": {"password": MASK, "uri": "postgresql://u:***@h/d", "name": "x"}
    }
    assert yaml.safe_load(overrides.read_text()) == [
        "logger.mlflow.tracking_uri=postgresql://u:***@h/d",
        "+db.password=***",
    ]


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
def test_a_database_password_reaches_no_param_tag_artifact_or_file(processed, tmp_path, postgres_uri):
    # trust authentication accepts any password: the URI carries one, as a user's would
    uri = postgres_uri.replace("mlflow@", f"mlflow:{PASSWORD}@")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(  # a one-job sweep: the launcher logs every override, and a parent run is made
        [
            sys.executable,
            "-m",
            "pipeline.train",
            "-m",
            f"paths.processed_dir={processed}",
            f"paths.log_dir={work / 'logs'}",
            "experiment=spirals_mlp",
            "trainer.max_epochs=1",
            "callbacks.progress_bar.refresh_rate=0",
            f"logger.mlflow.tracking_uri='{uri}'",
        ],  # on the command line too: Hydra's own files see it then
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert PASSWORD not in result.stdout + result.stderr

    client = MlflowClient(uri)
    parent, job = sorted(
        client.search_runs([client.get_experiment_by_name("spirals_mlp").experiment_id]),
        key=lambda run: run.data.tags.get("pipeline.sweep", "") != "parent",
    )
    assert job.data.params["logger/mlflow/tracking_uri"] == postgres_uri.replace("mlflow@", "mlflow:***@")
    artifacts: dict[Path, str] = {}
    for run in (parent, job):
        for key, value in [*run.data.params.items(), *run.data.tags.items()]:
            assert PASSWORD not in key + value, key
        artifacts.update(
            text_files(Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))))
        )
    assert {"config.yaml", "children.csv"} <= {path.name for path in artifacts} and len(artifacts) > 5
    run_folder = text_files(work / "logs")
    names = {path.name for path in run_folder}
    assert {"overrides.yaml", "multirun.yaml", "mlflow_run.json"} <= names and any(
        p.suffix == ".log" for p in run_folder
    )
    for path, text in run_folder.items():
        if path.suffix == ".yaml":
            yaml.safe_load(text)  # redacted, still YAML
    leaks = [str(path) for path, text in {**artifacts, **run_folder}.items() if PASSWORD in text]
    assert not leaks, f"the password is in {leaks}"
