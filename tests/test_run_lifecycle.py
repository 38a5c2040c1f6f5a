"""Runs end in the right state, with real processes: several jobs on a new store, a training killed with
SIGKILL and resumed, runs of dead processes, a sweep whose job fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.errors import ModelConfigError
from pipeline.models.checkpoints import newest_last_checkpoint
from pipeline.tracking.provenance import cpu_model_and_flags
from pipeline.tracking.run import PARENT_TAG, TrackedRun
from pipeline.train import train
from tests.conftest import REPO_ROOT, history, make_cfg, train_command
from tests.patched_upload import UPLOAD_ERROR, failing_upload

QUICK = [
    "experiment=spirals_mlp",
    "callbacks.progress_bar.refresh_rate=0",
    "logger.mlflow.pytorch_model=false",
    "callbacks=no_figures",
]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def run_reap() -> subprocess.CompletedProcess:
    """``python -m pipeline.tracking.reap`` on the store of MLFLOW_TRACKING_URI."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.tracking.reap"],
        cwd=REPO_ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def runs(store: str, experiment: str = "spirals_mlp") -> list:
    client = MlflowClient(store)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@pytest.mark.slow
def test_concurrent_jobs_on_a_new_sqlite_store_all_succeed(processed, tmp_path):
    store = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"  # no file yet: these processes create the schema
    jobs = [
        subprocess.Popen(
            train_command(processed, tmp_path / "logs", *QUICK, "trainer.max_epochs=1", f"seed={seed}", "threads=1"),
            cwd=REPO_ROOT,
            env=environment(MLFLOW_TRACKING_URI=store),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for seed in range(3)
    ]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    for job, output in zip(jobs, outputs, strict=False):
        assert job.returncode == 0, output[-3000:]
    finished = runs(store)
    assert len(finished) == 3 and {run.info.status for run in finished} == {"FINISHED"}
    # what decides the floating-point results is on every run (item 6 of the record issue)
    model, flags = cpu_model_and_flags()
    for run in finished:
        tags = run.data.tags
        assert tags["env.threads"] == "1" and tags["env.torch"] == torch.__version__
        assert tags["env.cpu"] == model and tags["env.cpu_flags"] == " ".join(flags)
        assert tags["env.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert tags["env.cuda"] == str(torch.version.cuda)


# 0.4 s after every epoch: a training slow enough to stop half-way
SLOW = [
    "callbacks.early_stopping=null",
    "+callbacks.slow._target_=tests.slow_epochs.SlowEpochs",
    "+callbacks.slow.seconds=0.4",
]


def slow_training(processed: Path, logs: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        train_command(processed, logs, *QUICK, *SLOW, *overrides),
        cwd=REPO_ROOT,
        env=environment(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_after_epochs(job: subprocess.Popen, runs_dir: Path, epochs: int, timeout: float = 300) -> None:
    """SIGKILL the training once its history.csv has ``epochs`` rows (last.ckpt is written with each row)."""
    deadline = time.monotonic() + timeout
    while True:
        history_file = next(runs_dir.glob("*/history.csv"), None)
        if history_file is not None and len(history(history_file)) >= epochs:
            break
        assert job.poll() is None, f"the training ended before it could be killed: {job.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "the training did not reach the epoch to kill it at"
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=60)


@pytest.mark.slow
def test_a_killed_training_resumes_into_the_same_run(processed, tmp_path, mlflow_store):
    logs = tmp_path / "logs"
    overrides = [*QUICK, *SLOW, "trainer.max_epochs=10"]
    job = slow_training(processed, logs, "trainer.max_epochs=10")
    kill_after_epochs(job, logs / "spirals_mlp" / "runs", epochs=4)
    (killed,) = runs(mlflow_store)
    assert killed.info.status == "RUNNING"  # nothing could end it

    resumed = subprocess.run(
        train_command(processed, logs, *overrides, "resume=true"),
        cwd=REPO_ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    (run,) = runs(mlflow_store)  # the same run, continued: no second one
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    client = MlflowClient(mlflow_store)
    epochs = {m.value for m in client.get_metric_history(run.info.run_id, "epoch")}
    assert set(range(10)) <= epochs <= set(range(11)), epochs  # the whole training (and the test, at 10)
    val_steps = {m.step for m in client.get_metric_history(run.info.run_id, "val/loss")}
    assert len(val_steps) == 10
    assert "test/acc" in run.data.metrics and run.data.tags["pipeline.resumed"] == "true"
    assert "pipeline.ended" not in run.data.tags  # reaped as KILLED when the resume started, then continued
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "config_resumed.yaml"} <= artifacts


@pytest.mark.slow
def test_the_reap_command_ends_runs_of_dead_processes(processed, tmp_path, mlflow_store):
    logs = tmp_path / "logs"
    job = slow_training(processed, logs, "trainer.max_epochs=30")
    kill_after_epochs(job, logs / "spirals_mlp" / "runs", epochs=1)
    (killed,) = runs(mlflow_store)
    assert killed.info.status == "RUNNING"
    reap = run_reap()
    assert reap.returncode == 0 and killed.info.run_id in reap.stdout, reap.stdout + reap.stderr
    (run,) = runs(mlflow_store)
    assert run.info.status == "KILLED" and "died" in run.data.tags["pipeline.ended"]
    again = run_reap()
    assert again.stdout.startswith("0 run(s)")  # a finished (or live) run is never touched


@pytest.mark.slow
def test_a_terminated_training_ends_its_run_killed(processed, tmp_path, mlflow_store):
    # SIGTERM is what SLURM and Kubernetes send before they pre-empt a job: Lightning stops at the next batch
    logs = tmp_path / "logs"
    job = slow_training(processed, logs, "trainer.max_epochs=30")
    deadline = time.monotonic() + 300
    while next((logs / "spirals_mlp" / "runs").glob("*/history.csv"), None) is None:
        assert job.poll() is None and time.monotonic() < deadline, "the training did not start"
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    output = job.communicate(timeout=120)[0]
    (run,) = runs(mlflow_store)
    assert run.info.status == "KILLED", output[-3000:]


def training_with_a_hanging_upload(processed: Path, tmp_path: Path) -> subprocess.Popen:
    """A short training, in its own process, whose model upload never ends (``tests.patched_upload``)."""
    overrides = train_command(processed, tmp_path / "logs", *QUICK[:2], "callbacks=no_figures", "trainer.max_epochs=2")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.patched_upload", str(tmp_path / "uploading"), *overrides[3:]],
        cwd=REPO_ROOT,
        env=environment(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_a_training_killed_during_its_model_upload_never_ends_finished(processed, tmp_path, mlflow_store):
    job = training_with_a_hanging_upload(processed, tmp_path)
    deadline = time.monotonic() + 300
    while not (tmp_path / "uploading").exists():  # the model upload began: fit and test are done
        assert job.poll() is None, job.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the training did not reach its model upload"
        time.sleep(0.2)
    (run,) = runs(mlflow_store)
    assert run.info.status == "RUNNING" and "test/acc" in run.data.metrics
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=60)
    (run,) = runs(mlflow_store)
    assert run.info.status == "RUNNING"  # not FINISHED: the model never arrived
    assert run_reap().returncode == 0
    assert runs(mlflow_store)[0].info.status == "KILLED"


def test_a_failed_model_upload_fails_the_run_and_the_training(processed, tmp_path, mlflow_store, monkeypatch):
    monkeypatch.setattr(TrackedRun, "log_model", failing_upload)
    cfg = make_cfg(processed, tmp_path, "logger=mlflow", *QUICK[:2], "callbacks=no_figures", "trainer.max_epochs=2")
    with pytest.raises(RuntimeError, match=UPLOAD_ERROR):
        train(cfg)
    (run,) = runs(mlflow_store)
    assert run.info.status == "FAILED" and "test/acc" in run.data.metrics  # the test ran; its numbers are kept
    assert {a.path for a in MlflowClient(mlflow_store).list_artifacts(run.info.run_id)} >= {"model_summary.txt"}


def test_resume_true_takes_the_newest_last_checkpoint_of_the_task(tmp_path):
    with pytest.raises(ModelConfigError, match=r"resume=true: no run of task_name=demo has a checkpoint"):
        newest_last_checkpoint(tmp_path, "demo")
    for index, name in enumerate(["2026-01-02_old", "2026-01-01_new"]):  # newest by time written, not by name
        path = tmp_path / "demo" / "runs" / name / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1000 + index, 1000 + index))
    assert newest_last_checkpoint(tmp_path, "demo") == str(tmp_path / "demo/runs/2026-01-01_new/checkpoints/last.ckpt")


@pytest.mark.slow
def test_a_failed_sweep_job_and_its_sweep_end_failed(processed, tmp_path, mlflow_store):
    # job 0 trains; job 1 diverges (the NaN guard stops it in its first epoch), which ends Hydra's multirun
    overrides = ("trainer.max_epochs=1", "optimizer=sgd", "optimizer.lr=0.01,1e30")
    result = subprocess.run(
        train_command(processed, tmp_path / "logs", *QUICK, *overrides, multirun=True),
        cwd=REPO_ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0 and "training loss is" in result.stderr, result.stderr[-3000:]
    all_runs = runs(mlflow_store)
    (parent,) = [run for run in all_runs if run.data.tags.get("pipeline.sweep") == "parent"]
    children = {run.data.tags["sweep.job"]: run for run in all_runs if run.data.tags.get(PARENT_TAG)}
    assert parent.info.status == "FAILED", result.stderr[-3000:]
    assert children["0"].info.status == "FINISHED" and children["1"].info.status == "FAILED"
    client = MlflowClient(mlflow_store)
    assert "children.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}  # summary of what ran
