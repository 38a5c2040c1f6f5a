"""Lightning callbacks the benchmarks add to a pipeline run with a Hydra override, to read its clock.

    python -m pipeline.train ... '+callbacks.bench_probe={_target_: bench.probes.TimingProbe, path: t.json}'

They only record ``time.time()`` at a few hooks (microseconds each), so the run measured is the
run users get. The benchmark puts the project root on ``PYTHONPATH`` so ``bench`` imports.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L


class TimingProbe(L.Callback):
    """Writes the wall-clock times of the first training step and of every epoch's start and end, and the
    process's CPU time (user + system, all threads: ``time.process_time``) at each epoch's start and end.

    An epoch runs from ``on_train_epoch_start`` to ``on_train_epoch_end`` (after Lightning's
    validation pass, checkpointing and logging: everything a user waits for between epochs);
    ``train_end`` marks where its training batches ended and validation began.
    ``exit_after_first_step`` ends the process at once after the first step's time is written:
    the start-up benchmark needs nothing after it.
    """

    def __init__(self, path: str, exit_after_first_step: bool = False, time_mlflow: bool = False) -> None:
        self.path = Path(path)
        self.exit_after_first_step = exit_after_first_step
        self.record: dict[str, Any] = {"pid": os.getpid(), "epochs": []}
        if time_mlflow:
            self.mlflow_clock = MlflowClock()
            self.record["mlflow"] = self.mlflow_clock.totals
            atexit.register(self._write)  # the model is logged after the last Lightning hook

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record), encoding="utf-8")
        tmp.replace(self.path)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if "first_step" not in self.record:
            self.record["first_step"] = time.time()
            self._write()
            if self.exit_after_first_step:
                os._exit(0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["epochs"].append({"start": time.time(), "cpu_start": time.process_time()})

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self.record["epochs"]:  # the epoch's training batches are done
            self.record["epochs"][-1]["train_end"] = time.time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["epochs"][-1].update(end=time.time(), cpu_end=time.process_time())
        self._write()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["test_end"] = time.time()
        self._write()


class MlflowClock:
    """Seconds this process's main thread spends in MLflow: importing it, every ``MlflowClient`` call
    (Lightning's logger and the pipeline's tracking both go through it) and the pipeline's tracking
    functions, the model's upload among them.

    Nested calls count once (the outermost). A client's constructor counts too ("open the store"):
    for a SQLite store it imports MLflow's database layer and checks the schema. Made before the
    run's logger exists (callbacks are built first), so the import of ``mlflow`` happens here and
    is counted too. Calls in other threads (MLflow's system-metrics monitor, every 10 s) are
    summed apart, in ``background_s``: they run beside the training, slowing it only where they
    compete for the cores (milliseconds a sample). What this does not see is the Python work Lightning's
    logger does around the calls: microseconds.
    """

    # What the run's owner does beyond single client calls (timed as a whole, not per client call inside).
    TRACKING_METHODS = ("log_config", "log_model", "log_text", "log_artifact", "end")

    def __init__(self) -> None:
        self.totals: dict[str, Any] = {
            "import_s": 0.0,
            "calls_s": 0.0,
            "calls": 0,
            "by_call_s": {},
            "background_s": 0.0,
            "by_background_call_s": {},
        }
        self._depth = threading.local()
        start = time.perf_counter()
        import mlflow  # noqa: F401  (the cost of the import is part of what tracking adds)
        from mlflow import MlflowClient

        self.totals["import_s"] = time.perf_counter() - start
        for name, member in list(vars(MlflowClient).items()):
            # __init__ too: a client of a SQLite store opens (imports, creates or checks) the store there.
            if callable(member) and (not name.startswith("_") or name == "__init__"):
                setattr(MlflowClient, name, self._timed(member))
        from pipeline.tracking.run import TrackedRun

        for name in self.TRACKING_METHODS:
            setattr(TrackedRun, name, self._timed(getattr(TrackedRun, name)))
        TrackedRun.start = classmethod(self._timed(TrackedRun.start.__func__))  # type: ignore[method-assign]

    def _timed(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "value", 0)
            self._depth.value = depth + 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth.value = depth
                if depth == 0:
                    self._add(function.__name__, time.perf_counter() - start)

        return timed

    def _add(self, function_name: str, seconds: float) -> None:
        name = "open the store" if function_name == "__init__" else function_name
        if threading.current_thread() is threading.main_thread():
            self.totals["calls_s"] += seconds
            self.totals["calls"] += 1
            by_call = self.totals["by_call_s"]
        else:
            self.totals["background_s"] += seconds
            by_call = self.totals["by_background_call_s"]
        by_call[name] = by_call.get(name, 0.0) + seconds
