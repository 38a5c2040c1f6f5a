"""Benchmark 5: time to 99 % MNIST test accuracy on a GPU, the dataset resident on the device.

The time-to-accuracy benchmark's MNIST recipe with ``trainer=gpu`` and
``data.datamodule.on_device=true`` (the splits are moved to the GPU once, so a batch is an
index into device memory: no host-to-device copy per step). Skipped, with a SKIP verdict,
where no CUDA device is visible.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from bench import time_to_accuracy
from bench.report import Result, Target

OVERRIDES = ("trainer=gpu",)
RESIDENT = ("data.datamodule.on_device=true",)


def measure(repeats: int, log: Callable[[str], None] = print) -> Result:
    if not torch.cuda.is_available():
        log("gpu: no CUDA device visible; skipped")
        result = Result("gpu", "Time to accuracy on a GPU", ["recipe", "note"])
        result.rows.append(
            {
                "recipe": f"MNIST (`experiment=mnist_fast {' '.join(OVERRIDES + RESIDENT)}`)",
                "note": "skipped: no CUDA device on the machine that ran the benchmark",
            }
        )
        result.targets.append(Target("MNIST ≥ 99.0% on a GPU, data on the device", "not run", "≥ 99.0%", None))
        return result
    mnist = time_to_accuracy.RECIPES[0]
    recipes = [  # no time target on a GPU; the host-memory row shows what keeping the data on the device saves
        time_to_accuracy.Recipe(f"{mnist.label}, data on the GPU", mnist.experiment, mnist.accuracy, None, RESIDENT),
        time_to_accuracy.Recipe(
            f"{mnist.label}, batches copied from host memory", mnist.experiment, mnist.accuracy, None, target=False
        ),
    ]
    tracked = importlib.util.find_spec("mlflow") is not None  # a bare GPU image may lack it: then logger=csv
    result = time_to_accuracy.measure(
        repeats,
        log,
        overrides=OVERRIDES + (() if tracked else ("logger=csv",)),
        recipes=recipes,
        device_label=torch.cuda.get_device_name(0),
        mlflow_target=False,
        time_mlflow=tracked,
    )
    result.name = "gpu"
    if not tracked:
        result.notes.append("MLflow is not installed on the GPU machine that ran this: `logger=csv` (CSV logs only).")
    return result
