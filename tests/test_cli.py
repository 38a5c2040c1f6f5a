"""The stage entry points as a user runs them: clear errors, exit code 1, nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO_ROOT


def run_stage(
    module: str, *overrides: str, cwd: Path = REPO_ROOT, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_fetch_with_empty_mirror_and_no_network_fails_clearly(tmp_path, closed_port_url):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    result = run_stage(
        "pipeline.fetch",
        "data=mnist",
        f"paths.root_dir={tmp_path}",
        f"data.source.urls=[{closed_port_url}]",
        env={"PIPELINE_DATA_MIRROR": str(empty)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FetchError: could not fetch mnist/train-images-idx3-ubyte.gz" in output
    assert f"{empty}/mnist/train-images-idx3-ubyte.gz: not found" in output
    assert "Connection refused" in output and "PIPELINE_DATA_MIRROR" in output
    assert "Traceback" not in output
    raw = tmp_path / "datasets" / "raw" / "mnist"
    assert list(raw.iterdir()) == []


def test_fetch_and_preprocess_a_generated_dataset(tmp_path):
    assert run_stage("pipeline.fetch", "data=xor", f"paths.root_dir={tmp_path}").returncode == 0
    result = run_stage("pipeline.preprocess", "data=xor", f"paths.root_dir={tmp_path}", "data.preprocess.test_size=100")
    assert result.returncode == 0, result.stdout + result.stderr
    y = np.load(tmp_path / "datasets" / "processed" / "xor" / "test_y.npy")
    assert len(y) == 100


def test_config_mistakes_are_reported_without_traceback(tmp_path):
    result = run_stage("pipeline.fetch", "data=mnist", f"paths.root_dir={tmp_path}", "~data.source.files.test_labels")
    assert result.returncode == 1
    assert "DataConfigError: source.files lacks test_labels" in result.stdout + result.stderr
    unknown = run_stage("pipeline.fetch", "data=no_such_dataset", f"paths.root_dir={tmp_path}")
    assert unknown.returncode == 1 and "Could not find 'data/no_such_dataset'" in unknown.stderr


def test_preprocess_before_fetch_says_what_to_run(tmp_path):
    result = run_stage("pipeline.preprocess", "data=iris", f"paths.root_dir={tmp_path}")
    assert result.returncode == 1
    assert "table.csv: raw file missing; run the fetch stage first" in result.stdout
