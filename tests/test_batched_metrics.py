"""Metric writes wait on the client and reach the store together, the same values with the same steps and
timestamps: on a real SQLite store, in a real training, and in a training that fails half-way."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from pipeline.tracking import batched_metrics
from pipeline.tracking.batched_metrics import BatchedMetricsClient
from pipeline.train import train
from tests.conftest import history, make_cfg, only_run


def stored(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def test_waiting_values_reach_the_store_as_logged_in_batches_it_accepts(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("batched")
    direct, batched_run = (client.create_run(experiment).info.run_id for _ in range(2))
    batched = BatchedMetricsClient(client, flush_interval=3600)
    # 2,500 values, more than the 1,000 a store takes in one call, with their own steps and timestamps
    calls = [[Metric("train/loss_step", 1 / (step + 1), 1_000_000 + step, step)] for step in range(2_500)]
    for metrics in calls:
        client.log_batch(direct, metrics=metrics)
        batched.log_batch(batched_run, metrics=metrics)
    assert stored(client, batched_run, "train/loss_step") == []  # all still waiting on the client
    batched.log_batch(batched_run, params=[Param("lr", "0.1")])  # other writes go at once, after the waiting ones
    assert client.get_run(batched_run).data.params == {"lr": "0.1"}
    assert stored(client, batched_run, "train/loss_step") == stored(client, direct, "train/loss_step")
    assert len(stored(client, direct, "train/loss_step")) == 2_500


class RecordingClient:
    def __init__(self) -> None:
        self.writes: list[list[float]] = []

    def log_batch(self, run_id: str, metrics=(), params=(), tags=(), **options) -> None:
        self.writes.append([m.value for m in metrics])


def test_a_value_waits_at_most_the_flush_interval(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(batched_metrics.time, "monotonic", lambda: now[0])
    store = RecordingClient()
    batched = BatchedMetricsClient(store, flush_interval=10)
    for second, value in ((0, 1.0), (4, 2.0), (9.9, 3.0), (10, 4.0), (12, 5.0)):
        now[0] = second
        batched.log_batch("run", metrics=[Metric("m", value, 0, 0)])
    assert store.writes == [[1.0, 2.0, 3.0, 4.0]]  # the first value turned 10 s old with the fourth
    batched.flush()
    assert store.writes == [[1.0, 2.0, 3.0, 4.0], [5.0]]
    immediate = BatchedMetricsClient(store := RecordingClient(), flush_interval=0)
    for value in (1.0, 2.0):
        immediate.log_batch("run", metrics=[Metric("m", value, 0, 0)])
    assert store.writes == [[1.0], [2.0]]


def csv_logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``key``'s values as Lightning's CSV logger wrote them beside MLflow, by step."""
    (metrics_csv,) = run_dir.glob("csv/*/metrics.csv")
    with open(metrics_csv) as fh:
        return [(int(row["step"]), float(row[key])) for row in csv.DictReader(fh) if row.get(key)]


def metric_writes(monkeypatch) -> list[int]:
    """How many values each of the store's metric writes carried, from now on."""
    writes: list[int] = []
    log_batch = MlflowClient.log_batch

    def counted(self, run_id, metrics=(), params=(), tags=(), **options):
        if metrics:
            writes.append(len(metrics))
        return log_batch(self, run_id, metrics, params, tags, **options)

    monkeypatch.setattr(MlflowClient, "log_batch", counted)
    return writes


QUICK = ["logger=mlflow", "experiment=spirals_mlp", "callbacks=no_figures", "logger.mlflow.pytorch_model=false"]
EVERY_STEP = ["trainer.log_every_n_steps=1", "data.datamodule.batch_size=4"]  # 30 steps an epoch on the tests' spirals


def test_a_training_writes_its_step_losses_once_an_epoch_and_loses_none(processed, tmp_path, mlflow_store, monkeypatch):
    writes = metric_writes(monkeypatch)
    cfg = make_cfg(processed, tmp_path, *QUICK, *EVERY_STEP, "trainer.max_epochs=3")
    train(cfg)
    run = only_run(mlflow_store, "spirals_mlp")
    steps = stored(MlflowClient(mlflow_store), run.info.run_id, "train/loss_step")
    expected = csv_logged(tmp_path / "run", "train/loss_step")
    assert [(step, value) for step, value, _ in steps] == expected and len(expected) >= 3 * 30
    # one value a step before; now a write at the end of each epoch and stage (val, train, lr, test)
    assert len(writes) < 0.2 * len(expected), writes


class FailHalfWay(L.Callback):
    """Raises at the start of the second epoch's middle batch."""

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: object, index: int) -> None:
        if trainer.current_epoch == 1 and index == trainer.num_training_batches // 2:
            raise RuntimeError("a failure half-way through an epoch")


def test_a_failed_training_writes_the_values_that_waited_before_its_run_fails(processed, tmp_path, mlflow_store):
    cfg = make_cfg(
        processed,
        tmp_path,
        *QUICK,
        *EVERY_STEP,
        "logger.mlflow.metrics_flush_interval=3600",  # nothing leaves the client by age
        f"+callbacks.fail._target_={__name__}.FailHalfWay",
    )
    with pytest.raises(RuntimeError, match="half-way"):
        train(cfg)
    run = only_run(mlflow_store, "spirals_mlp")
    steps = stored(MlflowClient(mlflow_store), run.info.run_id, "train/loss_step")
    expected = csv_logged(tmp_path / "run", "train/loss_step")  # Lightning's CSV logger saves on failure
    first_epoch = int(history(tmp_path / "run" / "history.csv")[0]["step"])
    assert run.info.status == "FAILED"
    assert [(step, value) for step, value, _ in steps] == expected
    assert [step for step, _ in expected] == list(range(first_epoch + first_epoch // 2))  # the failed epoch's too
