"""Load time of a logged model in MLflow's pt2 and pickle formats (mnist_cnn's LeNet), each in fresh processes.

python bench/model_load_time.py        # after `make run` (experiments/mnist_cnn/model.ckpt)
"""

import shutil
import statistics
import subprocess
import sys

import mlflow.pytorch
import numpy as np

from pipeline.data.spec import DatasetSpec
from pipeline.models.checkpoints import load_module
from pipeline.tracking.model import Predictor, output_kind

module, record = load_module("/work/main/experiments/mnist_cnn/model.ckpt")
spec = DatasetSpec.from_record(record["data"])
predictor = Predictor(module.get_submodule("net"), spec, output_kind(module)).eval()
example = np.load("/work/main/datasets/processed/mnist/test_x.npy")[:2].astype(np.float32)
for fmt in ("pt2", "pickle"):
    shutil.rmtree(f"/tmp/lt/{fmt}", ignore_errors=True)
    mlflow.pytorch.save_model(
        predictor, f"/tmp/lt/{fmt}", serialization_format=fmt, input_example=example, pip_requirements=["torch"]
    )
code = (
    "import time, numpy as np, mlflow.pyfunc; t=time.perf_counter(); m=mlflow.pyfunc.load_model('{}'); "
    "l=time.perf_counter()-t; t=time.perf_counter(); m.predict(np.zeros((64,1,28,28),np.float32)); "
    "print(l, time.perf_counter()-t)"
)
for fmt in ("pt2", "pickle"):
    runs = [
        list(
            map(
                float,
                subprocess.run(
                    [sys.executable, "-c", code.format(f"/tmp/lt/{fmt}")], capture_output=True, text=True
                ).stdout.split(),
            )
        )
        for _ in range(3)
    ]
    print(
        fmt,
        "load s",
        [round(r[0], 2) for r in runs],
        "median",
        round(statistics.median(r[0] for r in runs), 2),
        "first predict(64) s",
        round(statistics.median(r[1] for r in runs), 3),
    )
