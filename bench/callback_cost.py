"""What a training run's callbacks cost per step in Lightning's loop, apart from the network's own work.

Lightning calls every hook of every callback at every step (about a dozen per step, each wrapped
in a profiler context and a ``state_key``), whether or not the callback overrides it. This fits
one tiny model (a linear layer, so the step's own kernels are small) with no callbacks, with the
callbacks a preset's config lists, and with those that training keeps for a table classifier
(``pipeline.train.instantiate_callbacks`` leaves out figures its model and data cannot have), in
turns in one process, and prints CPU µs per step (medians; whole steps only, from the first batch's
start to the last one's, so nothing a callback does once a fit is counted). ``--each`` adds the CSV logger alone
and each kept callback alone (with that logger, which the LR monitor needs):

    python -m bench.callback_cost --repeats 5 [--each]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from bench.setup import TABLE_CLASSES, TABLE_FEATURES
from bench.step_parts import BATCH
from pipeline.callbacks.figures import FigureCallback
from pipeline.cli import config_dir

NONE = "no callbacks"  # the one side without a logger: every other has the CSV logger (the LR monitor needs one)


class TinyClassifier(L.LightningModule):
    """A linear layer on 50 features, 7 classes: a step whose kernels take a few µs."""

    family = "classification"

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(50, 7)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def on_train_epoch_end(self) -> None:
        self.log("val/loss", 1.0)  # what the configured checkpoints and early stopping monitor

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def configured_callbacks(work: str) -> Callable[[], list[L.Callback]]:
    """A builder of the callbacks conf/train.yaml lists (writing under ``work``)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={work}"])
    return lambda: [instantiate(c) for c in cfg.callbacks.values() if c and "_target_" in c]


def kept_for_a_table_classifier(callbacks: list[L.Callback]) -> list[L.Callback]:
    """What training keeps of ``callbacks`` for a classifier of 50 features (as ``instantiate_callbacks``)."""
    return [c for c in callbacks if not isinstance(c, FigureCallback) or c.applies(TinyClassifier(), (50,))]


class StepClock(L.Callback):
    """The process's CPU time at the start of every training batch. Timing from the first batch's start to
    the last one's counts whole steps only: what callbacks do once a fit (a figure drawn at its end, a
    checkpoint saved) is left out, rather than spread over the steps."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.starts.append(time.process_time())

    def us_per_step(self) -> float:
        return us_between(self.starts)


def us_between(starts: list[float]) -> float:
    """µs a step from the CPU times at which batches started: the first start to the last, whole steps only."""
    if len(starts) < 2:
        raise ValueError(f"a step's time needs two batch starts or more, {len(starts)} were recorded")
    return (starts[-1] - starts[0]) / (len(starts) - 1) * 1e6


def random_batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of the bench table's shape: 512 rows of 50 features, labels of 7 classes."""
    return [(torch.randn(BATCH, TABLE_FEATURES), torch.randint(0, TABLE_CLASSES, (BATCH,))) for _ in range(steps)]


def require_two_steps(parser: argparse.ArgumentParser, steps: int) -> None:
    """Refuse ``--steps`` below 2: a step is timed from one batch's start to the next."""
    if steps < 2:
        parser.error(f"--steps must be at least 2 (a step is timed from one batch start to the next), got {steps}")


def quiet_lightning() -> None:
    """Only errors from Lightning and no warnings: the timing tools print their figures alone."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # Lightning sets its own level on import


def cpu_us_per_step(callbacks: list[L.Callback], steps: int, work: str, logger: bool = True) -> float:
    """One epoch of ``steps`` batches of 512 with ``callbacks`` (and a CSV logger); the process's CPU µs per step."""
    batches = random_batches(steps)
    clock = StepClock()
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[clock, *callbacks],
        logger=L.pytorch.loggers.CSVLogger(work) if logger else False,
        enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in callbacks),
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=work,
    )
    trainer.fit(TinyClassifier(), DataLoader(batches, batch_size=None))
    return clock.us_per_step()


def one_at_a_time(kept: Callable[[], list[L.Callback]]) -> dict[str, Callable[[], list[L.Callback]]]:
    """A side per callback of ``kept()``, named by its class (and position, for two of one class)."""
    names = [type(c).__name__ for c in kept()]
    return {
        f"only {name}" + (f" #{index}" if names.count(name) > 1 else ""): (lambda index=index: [kept()[index]])
        for index, name in enumerate(names)
    }


def measure(repeats: int, steps: int, each: bool = False) -> dict[str, float]:
    """Median CPU µs per step of each callback list, the lists run in turns."""
    with tempfile.TemporaryDirectory() as work:
        configured = configured_callbacks(work)

        def kept() -> list[L.Callback]:
            return kept_for_a_table_classifier(configured())

        sides: dict[str, Callable[[], list[L.Callback]]] = {
            NONE: list,
            "configured": configured,
            "kept for a table classifier": kept,
        }
        if each:
            sides |= {"CSV logger only": list} | one_at_a_time(kept)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(repeats):
            for name, make in sides.items():
                times[name].append(cpu_us_per_step(make(), steps, work, logger=name != NONE))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--each", action="store_true", help="also the CSV logger alone and each kept callback alone")
    args = parser.parse_args()
    require_two_steps(parser, args.steps)
    quiet_lightning()
    torch.set_num_threads(1)
    for name, value in measure(args.repeats, args.steps, args.each).items():
        print(f"{name:<36} {value:7.0f} CPU µs per step")


if __name__ == "__main__":
    main()
