"""What MLflow's serving check adds to a pt2 model upload (not in ``make bench``).

    python -m bench.serving_check --repeats 3

Why: ``TrackedRun.log_model`` logs a ``pt2`` model without MLflow's check that the logged model serves
its input example (``pipeline.tracking.run._serving_check``). Each side runs in fresh processes, in
turns, after the imports a training run has already made (torch, Lightning, pandas, MLflow): a store's
run, one ``torch.export`` of the net (as the run's first upload meets it warm), then three uploads of
``experiment=mnist_fast``'s untrained network, each timed (wall s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

SIDES = ("with", "without")

UPLOADS = """
import sys, tempfile, time
import lightning, mlflow, numpy as np, pandas, torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
import pipeline.tracking.run as run
from pipeline.cli import config_dir

if sys.argv[1] == "with":
    run._serving_check = lambda serialization_format: {}  # MLflow's default: the check runs
with initialize_config_dir(config_dir(), version_base="1.3"):
    cfg = compose("train", overrides=["experiment=mnist_fast"])
net = instantiate(cfg.model.net)((1, 28, 28), 10).eval()  # the experiment's network, as its config builds it
example = np.zeros((2, 1, 28, 28), np.float32)
tracked = run.TrackedRun.start(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db", "serving-check", {})
torch.export.export(net, (torch.from_numpy(example),))
for _ in range(3):
    start = time.perf_counter()
    tracked.log_model(net, example, "pt2")
    print(time.perf_counter() - start)
tracked.end("FINISHED")
"""


def upload_times(side: str) -> list[float]:
    """Wall s of three uploads in one fresh process, the check on (``with``) or as the pipeline has it."""
    done = subprocess.run([sys.executable, "-c", UPLOADS, side], capture_output=True, text=True, check=True)
    return [float(line) for line in done.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="processes a side, in turns")
    args = parser.parse_args()
    times: dict[str, list[list[float]]] = {side: [] for side in SIDES}
    for _ in range(args.repeats):
        for side in SIDES:
            times[side].append(upload_times(side))
    for side in SIDES:
        first = [round(t[0], 3) for t in times[side]]
        later = statistics.median(t for process in times[side] for t in process[1:])
        print(f"check {side:>7}: first upload {first} s (median {statistics.median(first):.3f}), later {later:.3f} s")


if __name__ == "__main__":
    main()
