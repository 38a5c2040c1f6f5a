"""Does a setting change any result? Every default experiment of ``dvc.yaml``, shortened, trained once with each of
two overrides: their ``metrics.json``, ``history.csv`` and last weights compared byte for byte. (Not part of
``make bench``: a check for a change meant to be faster only. Needs the experiments' processed data.)

    python -m bench.same_results fill_uninitialized_memory=true fill_uninitialized_memory=false
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
from pathlib import Path

import torch

from bench import setup

SHORT = [
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=20",
    "+trainer.limit_val_batches=5",
    "+trainer.limit_test_batches=5",
]
AGENT = ["data.datamodule.steps_per_epoch=200", "data.datamodule.warm_up_steps=200", "trainer.max_epochs=2"]
# in dvc.yaml's order: a GAN and a transfer are scored by, or start from, checkpoints of earlier ones
EXPERIMENTS = {
    "mnist_cnn": SHORT,
    "mnist_digits_0_4": SHORT,
    "spirals_logistic": SHORT,
    "spirals_mlp": SHORT,
    "line_regression": SHORT,
    "addition_rnn": SHORT,
    "mnist_gan": SHORT,
    "mnist_transfer_5_9": SHORT,
    "cartpole_dqn": AGENT,
}
NEEDS = {
    "mnist_gan": ("model.scorer_checkpoint", "mnist_cnn"),
    "mnist_transfer_5_9": ("callbacks.transfer.checkpoint", "mnist_digits_0_4"),
}


def train(name: str, folder: Path, overrides: list[str]) -> None:
    """One shortened run of experiment ``name`` into ``folder`` (its last weights in ``run/checkpoints``)."""
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        f"experiment={name}",
        "logger=csv",
        "callbacks.progress_bar.refresh_rate=0",
        f"paths.log_dir={folder}",
        f"hydra.run.dir={folder / 'run'}",
        f"metrics_file={folder / 'metrics.json'}",
        f"history_file={folder / 'history.csv'}",
        *overrides,
    ]
    subprocess.run(command, check=True, capture_output=True, env=setup.env())


def same(first: Path, second: Path) -> bool:
    weights = [
        torch.load(folder / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for folder in (first, second)
    ]
    return all(filecmp.cmp(first / f, second / f, shallow=False) for f in ("metrics.json", "history.csv")) and all(
        torch.equal(weights[0][k], weights[1][k]) for k in weights[0]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", help="a Hydra override (space-separated for several)")
    parser.add_argument("second")
    args = parser.parse_args()
    work = setup.WORK / "same_results"
    differ = []
    for name, short in EXPERIMENTS.items():
        folders = []
        for index, overrides in enumerate((args.first, args.second)):
            folder = work / name / str(index)
            need = (
                [f"{NEEDS[name][0]}={work / NEEDS[name][1] / str(index) / 'run/checkpoints/last.ckpt'}"]
                if name in NEEDS
                else []
            )
            train(name, folder, [*short, *need, *overrides.split()])
            folders.append(folder)
        identical = same(*folders)
        print(f"{name}: {'identical' if identical else 'DIFFERENT'}", flush=True)
        differ += [] if identical else [name]
    print("every result identical" if not differ else f"different: {', '.join(differ)}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
