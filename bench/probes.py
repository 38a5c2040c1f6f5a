"""Lightning callbacks the benchmarks add to a pipeline run with a Hydra override, to read its clock.

    python -m pipeline.train ... '+callbacks.bench_probe={_target_: bench.probes.TimingProbe, path: t.json}'

They only record ``time.time()`` at a few hooks (microseconds each), so the run measured is the
run users get. The benchmark puts the project root on ``PYTHONPATH`` so ``bench`` imports.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L


class TimingProbe(L.Callback):
    """Writes the wall-clock times of the first training step and of every epoch's start and end.

    An epoch runs from ``on_train_epoch_start`` to ``on_train_epoch_end`` (after Lightning's
    validation pass, checkpointing and logging: everything a user waits for between epochs).
    ``exit_after_first_step`` ends the process at once after the first step's time is written:
    the start-up benchmark needs nothing after it.
    """

    def __init__(self, path: str, exit_after_first_step: bool = False) -> None:
        self.path = Path(path)
        self.exit_after_first_step = exit_after_first_step
        self.record: dict[str, Any] = {"pid": os.getpid(), "epochs": []}

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record), encoding="utf-8")
        tmp.replace(self.path)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if "first_step" not in self.record:
            self.record["first_step"] = time.time()
            self._write()
            if self.exit_after_first_step:
                os._exit(0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["epochs"].append({"start": time.time()})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["epochs"][-1]["end"] = time.time()
        self._write()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["test_end"] = time.time()
        self._write()
