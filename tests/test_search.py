"""Optuna searches on Optuna 4: the presets' search space, persistent studies that continue, pruning."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pipeline.search.space import search_space, trial_overrides
from tests.conftest import REPO_ROOT, train_command


def search_env() -> dict[str, str]:
    """The test's environment (its MLflow store) at call time, one torch thread per worker on 2 cores."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_the_presets_search_spaces_are_the_distributions_they_were():
    """hydra-optuna-sweeper 1.3 made LogUniform / Categorical of these; Optuna 4 says the same thus."""
    spirals = yaml.safe_load((REPO_ROOT / "conf/hparams_search/spirals_optuna.yaml").read_text())
    space, fixed = search_space(spirals["hydra"]["sweeper"]["params"])
    assert fixed == {}
    assert space == {
        "optimizer.lr": FloatDistribution(0.001, 0.05, log=True),
        "optimizer.weight_decay": FloatDistribution(1e-6, 1e-3, log=True),
        "model.net.hidden": CategoricalDistribution(["[32,32]", "[64,64]", "[128,128]"]),
    }
    mnist = yaml.safe_load((REPO_ROOT / "conf/hparams_search/mnist_optuna.yaml").read_text())
    space, _ = search_space(mnist["hydra"]["sweeper"]["params"])
    assert space["data.datamodule.batch_size"] == CategoricalDistribution([64, 128, 256])
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)


def test_ranges_intervals_and_fixed_values():
    """Hydra reads interval() bounds as floats; int(...) makes them integers (as with the Hydra plugin)."""
    space, fixed = search_space(
        {
            "a": "int(interval(2, 8))",
            "b": "interval(2, 8)",
            "c": "range(8, 32, step=8)",
            "d": "tag(log, int(interval(1, 64)))",
            "e": "7",
        }
    )
    assert space == {
        "a": IntDistribution(2, 8),
        "b": FloatDistribution(2.0, 8.0),
        "c": IntDistribution(8, 32, step=8),
        "d": IntDistribution(1, 64, log=True),
    }
    assert fixed == {"e": "7"}
    assert trial_overrides({"a": 3, "c": 16}, fixed) == ["e=7", "a=3", "c=16"]


def test_a_study_has_one_parent_run_per_mlflow_store(tmp_path, migrated_mlflow_db, monkeypatch):
    """The same study continued against another store (a colleague's, a server) gets a parent run there, and
    each store's parent is found again by its next run; a parent a user deleted is replaced."""
    import shutil

    from pipeline.tracking.run import PARENT_RUN_ENV, open_store
    from pipeline.tracking.sweep import study_parent

    # study_parent sets it for the sweep's jobs: undone after the test (set first, so the undo knows it was unset)
    monkeypatch.setenv(PARENT_RUN_ENV, "")
    monkeypatch.delenv(PARENT_RUN_ENV)
    stores = []
    for name in ("mine", "theirs"):
        shutil.copyfile(migrated_mlflow_db, tmp_path / f"{name}.db")
        stores.append(f"sqlite:///{tmp_path / name}.db")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def parent(store: str) -> str:
        return study_parent(store, "spirals_mlp", {}, storage, "demo", "maximize")

    mine = parent(stores[0])
    optuna.load_study(study_name="demo", storage=storage).enqueue_trial({})  # a study with trials waits for no one
    theirs = parent(stores[1])
    assert theirs != mine and open_store(stores[1]).get_run(theirs).data.tags["optuna.study"] == "demo"
    assert parent(stores[0]) == mine and parent(stores[1]) == theirs
    open_store(stores[0]).delete_run(mine)  # as the UI's Delete does
    replaced = parent(stores[0])
    assert replaced not in (mine, theirs) and parent(stores[0]) == replaced


def _open_at_once(barrier: Any, url: str, errors: Any) -> None:
    from pipeline.studies import open_storage

    barrier.wait()
    try:
        open_storage(url)
    except Exception as error:
        errors.put(f"{type(error).__name__}: {error}")


def test_workers_opening_a_new_sqlite_study_storage_at_once_all_succeed(tmp_path):
    """Optuna creates a new database's tables in every process that opens it; unlocked, 4 processes released
    at once failed in 7 of 10 tries here (``table studies already exists``), which cost a worker its sweep's
    parent run."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        url = f"sqlite:///{tmp_path / str(attempt) / 'optuna.db'}"
        barrier, errors = context.Barrier(4), context.Queue()
        workers = [context.Process(target=_open_at_once, args=(barrier, url, errors)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [worker.exitcode for worker in workers] == [0] * 4
        assert errors.empty(), errors.get()
    study = optuna.create_study(study_name="demo", storage=url)
    assert optuna.load_study(study_name="demo", storage=url).study_name == study.study_name


def test_a_parent_created_before_the_sweep_failed_to_start_ends_failed(tmp_path, mlflow_store, monkeypatch):
    """The study's parent is created, then recording it on the study fails: the sweep stops before any job,
    and the parent it created ends FAILED at once (not RUNNING until a later command reaps it)."""
    from omegaconf import OmegaConf

    from pipeline.tracking.run import PARENT_RUN_ENV, open_store
    from pipeline.tracking.sweep import MlflowSweepCallback

    monkeypatch.setenv(PARENT_RUN_ENV, "")  # undone after the test
    monkeypatch.delenv(PARENT_RUN_ENV)

    def refuse(*args: Any) -> None:
        raise RuntimeError("the study storage went away")

    monkeypatch.setattr(optuna.Study, "set_user_attr", refuse)
    config = OmegaConf.create(
        {
            "logger": {"mlflow": {"_target_": "x", "tracking_uri": mlflow_store, "experiment_name": "spirals_mlp"}},
            "paths": {"root_dir": str(REPO_ROOT)},
            "hydra": {
                "overrides": {"task": ["hparams_search=spirals_optuna"]},
                "sweep": {"dir": str(tmp_path / "sweep")},
                "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"},
                "sweeper": {
                    "_target_": "pipeline.search.sweeper.OptunaSweeper",
                    "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
                    "study_name": "demo",
                    "direction": "maximize",
                },
            },
        }
    )
    with pytest.raises(SystemExit):
        MlflowSweepCallback().on_multirun_start(config)
    client = open_store(mlflow_store)
    (parent,) = client.search_runs([client.get_experiment_by_name("spirals_mlp").experiment_id])
    assert parent.data.tags["pipeline.sweep"] == "parent" and parent.info.status == "FAILED"
    assert PARENT_RUN_ENV not in os.environ


def search_command(processed: Path, logs: Path, storage: str, *overrides: str, logger: str = "csv") -> list[str]:
    """``python -m pipeline.train hparams_search=spirals_optuna`` on study ``demo`` of ``storage``."""
    return train_command(
        processed,
        logs,
        "hparams_search=spirals_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=demo",
        f"logger={logger}",
        "callbacks=no_figures",
        "callbacks.progress_bar.refresh_rate=0",
        *overrides,
    )


def search(
    processed: Path, logs: Path, storage: str, *overrides: str, logger: str = "csv"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        search_command(processed, logs, storage, *overrides, logger=logger),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=search_env(),
    )


@pytest.mark.slow
def test_a_trial_far_worse_than_the_others_is_pruned_and_its_run_says_so(processed, tmp_path, mlflow_store):
    """Two good trials (run unpruned), then one whose learning rate is far too small: the preset's median
    pruner stops it, its child run is tagged PRUNED with its curves up to then, and the parent counts it."""
    from mlflow.tracking import MlflowClient

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracked = ["logger.mlflow.pytorch_model=false", "trainer.max_epochs=4"]
    good = search(
        processed,
        tmp_path / "logs",
        storage,
        *tracked,
        "hydra.sweeper.n_trials=2",
        "optimizer.lr=0.03",
        "hydra/sweeper/pruner=none",
        logger="mlflow",
    )
    assert good.returncode == 0, good.stderr[-3000:]
    bad = search(
        processed,
        tmp_path / "logs",
        storage,
        *tracked,
        "hydra.sweeper.n_trials=1",
        "optimizer.lr=0.000001",
        logger="mlflow",
    )
    assert bad.returncode == 0, bad.stderr[-3000:]
    study = optuna.load_study(study_name="demo", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    reported = len(study.trials[2].intermediate_values)
    assert reported < 4  # stopped before its last epoch

    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("spirals_mlp").experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("pipeline.sweep") == "parent"]
    (pruned,) = [run for run in runs if run.data.tags.get("optuna.trial") == "2"]
    assert pruned.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert pruned.data.tags["optuna.state"] == "PRUNED" and pruned.info.status == "FINISHED"
    assert len(client.get_metric_history(pruned.info.run_id, "val/acc")) == reported  # its partial curve
    assert parent.data.metrics["trials/pruned"] == 1 and parent.data.metrics["trials/finished"] == 2


@pytest.mark.slow
def test_two_workers_and_a_later_run_share_one_study_and_one_parent_run(processed, tmp_path, mlflow_store):
    """The issue's scenario, smaller: two processes start the same search at once, a third continues it."""
    from mlflow.tracking import MlflowClient

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracked = ["logger.mlflow.pytorch_model=false", "hydra.sweeper.n_trials=2", "trainer.max_epochs=2"]

    def command(logs: Path) -> list[str]:
        return search_command(processed, logs, storage, *tracked, logger="mlflow")

    env = search_env()
    workers = [
        subprocess.Popen(
            command(tmp_path / f"w{i}"),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        output = worker.communicate(timeout=600)[0]
        assert worker.returncode == 0, output[-3000:]
    later = subprocess.run(
        command(tmp_path / "w2"),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert later.returncode == 0, later.stderr[-3000:]

    study = optuna.load_study(study_name="demo", storage=storage)
    assert len(study.trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("spirals_mlp").experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("pipeline.sweep") == "parent"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    seen = [(r.data.tags.get("optuna.trial"), r.data.tags.get("mlflow.parentRunId"), r.info.status) for r in runs]
    # on failure, every run's (trial, parent, status). It failed 2 runs in 8 while two workers could both
    # create the Optuna database's tables: one's parent run failed, and Hydra ran its trials as runs of no sweep.
    assert sorted(int(run.data.tags["optuna.trial"]) for run in children) == list(range(6)), (parent.info.run_id, seen)
    assert parent.data.tags["optuna.study"] == "demo" and parent.info.status == "FINISHED"
    assert parent.data.metrics["trials/finished"] + parent.data.metrics["trials/pruned"] == 6
    assert parent.data.metrics["trials/running"] == 0  # not a count left over from a worker's earlier summary


@pytest.mark.slow
def test_a_killed_search_continues_with_its_trials_kept(processed, tmp_path):
    """SIGKILL in the middle of a trial; the same command again keeps the finished trials, fails the one
    that died with its process, and adds its own."""
    import signal
    import time

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    slow = ["+callbacks.slow._target_=tests.slow_epochs.SlowEpochs", "+callbacks.slow.seconds=0.5"]
    command = search_command(processed, tmp_path / "logs", storage, "hydra.sweeper.n_trials=3", "trainer.max_epochs=4")
    env = search_env()
    search_process = subprocess.Popen(
        [*command, *slow], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while True:  # kill it once one trial is complete and the next one runs
        try:
            trials = optuna.load_study(study_name="demo", storage=storage).trials
        except KeyError:  # the study is not created yet
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if len(trials) == 2 and running and running[0].intermediate_values:  # in its second epoch, at least
            break
        assert search_process.poll() is None and time.monotonic() < deadline, "the search ended before the kill"
        time.sleep(0.2)
    search_process.send_signal(signal.SIGKILL)
    search_process.wait(timeout=60)

    again = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 earlier trials; running 3 more" in again.stderr + again.stdout
    states = [t.state for t in optuna.load_study(study_name="demo", storage=storage).trials]
    assert states[:2] == [TrialState.COMPLETE, TrialState.FAIL] and len(states) == 5
    assert all(state in (TrialState.COMPLETE, TrialState.PRUNED) for state in states[2:])


@pytest.mark.slow
def test_a_worker_on_a_postgresql_storage(processed, tmp_path, postgres_uri):
    """The cluster's storage: a worker's trials land in PostgreSQL (continuing and sharing a study is the same
    RDB storage code as SQLite's, tested above)."""
    result = search(processed, tmp_path / "logs", postgres_uri, "hydra.sweeper.n_trials=2", "trainer.max_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="demo", storage=postgres_uri)
    assert len(study.trials) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
