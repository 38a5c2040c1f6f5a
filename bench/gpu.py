"""Benchmark 5: time to 99 % MNIST test accuracy on a GPU, the dataset resident on the device.

The time-to-accuracy benchmark's MNIST recipe with ``trainer=gpu`` and
``data.datamodule.on_device=true`` (the splits are moved to the GPU once, so a batch is an
index into device memory: no host-to-device copy per step). Skipped, with a SKIP verdict,
where no CUDA device is visible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench import time_to_accuracy
from bench.report import Result, Target

OVERRIDES = ("trainer=gpu", "data.datamodule.on_device=true")


def measure(repeats: int, log: Callable[[str], None] = print) -> Result:
    if not torch.cuda.is_available():
        log("gpu: no CUDA device visible; skipped")
        result = Result("gpu", "Time to accuracy on a GPU", ["recipe", "note"])
        result.rows.append({"recipe": "MNIST (`experiment=mnist_fast trainer=gpu data.datamodule.on_device=true`)",
                            "note": "skipped: no CUDA device on the machine that ran the benchmark"})
        result.targets.append(Target("MNIST ≥ 99.0% on a GPU, data on the device", "not run", "≥ 99.0%", None))
        return result
    mnist = time_to_accuracy.RECIPES[0]
    recipe = time_to_accuracy.Recipe(mnist.label, mnist.experiment, mnist.accuracy, None)  # no time target on GPU
    result = time_to_accuracy.measure(repeats, log, overrides=OVERRIDES, recipes=[recipe],
                                      device_label=torch.cuda.get_device_name(0), mlflow_target=False)
    result.name = "gpu"
    return result
