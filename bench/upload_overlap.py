"""Would logging the model beside the test pass, in a worker thread, shorten a run? (Not part of ``make bench``.)

A trained ``experiment=mnist_fast`` model is tested and then uploaded to MLflow (as ``pipeline.train``
does), or uploaded from a thread (a copy of the model) while the test runs; each in a fresh process,
in turns, since most of an upload's time is first-use set-up. Prints the section's wall seconds:

    python -m pipeline.train experiment=mnist_fast logger=csv trainer.max_epochs=1 model_file=/tmp/m.ckpt
    python -m bench.upload_overlap /tmp/m.ckpt --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MODES = ("after the test", "beside the test")


def one(mode: str, checkpoint: str) -> float:
    """The seconds from the test's start to the end of both the test and the upload."""
    import lightning as L
    from hydra import compose, initialize_config_dir

    from bench import setup
    from pipeline.cli import config_dir
    from pipeline.errors import build
    from pipeline.models.checkpoints import read_checkpoint
    from pipeline.tracking.model import servable
    from pipeline.tracking.run import TrackedRun, open_store
    from pipeline.train import build_model

    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mnist_fast", "logger=csv"])
    datamodule = build(cfg.data.datamodule)
    model = build_model(cfg, datamodule.spec)
    model.load_state_dict(read_checkpoint(checkpoint)["state_dict"])
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
    open_store(setup.tracking_uri())
    run = TrackedRun.start(setup.tracking_uri(), "upload_overlap", {})

    def upload(module: L.LightningModule) -> None:
        run.log_model(*servable(module, datamodule)[:2], "pt2")

    start = time.perf_counter()
    worker = threading.Thread(target=upload, args=(copy.deepcopy(model),))
    if mode == "beside the test":
        worker.start()
    trainer.test(model, datamodule=datamodule, verbose=False)
    if mode == "after the test":
        worker.start()
    worker.join()
    seconds = time.perf_counter() - start
    run.end("FINISHED")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint of experiment=mnist_fast")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # the child process's measurement
    args = parser.parse_args()
    if args.one:
        print(f"SECONDS {one(args.one, args.checkpoint)}")
        return
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            command = [sys.executable, "-m", "bench.upload_overlap", args.checkpoint, "--one", mode]
            out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
            seconds[mode].append(float(out.stdout.split("SECONDS ")[-1]))
    for mode, values in seconds.items():
        print(f"{mode}: median {statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
