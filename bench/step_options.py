"""Two of the options for a tiny model's step, measured against the plain step (not in ``make bench``):
Lightning's manual optimization, a leaner step path (no closure, no automatic-optimization loop), and
``torch.compile`` of the network.

The MLP case's network (50-256-256-7) on batches of 512, CPU µs a step, whole steps only (from the first
batch's start to the last one's): the plain loop's step, the same network under a bare ``L.Trainer`` with
automatic and with manual optimization, and the plain step with the network compiled (its first step, the
compilation, is timed apart and left out). Sides in turns, one process; medians (min–max) of ``--rounds``:

    OMP_NUM_THREADS=1 python -m bench.step_options --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from bench.callback_cost import StepClock, quiet_lightning, random_batches, require_two_steps, us_between
from bench.setup import TABLE_CLASSES, TABLE_FEATURES
from bench.step_parts import HIDDEN
from pipeline.models import networks

Batches = list[tuple[torch.Tensor, torch.Tensor]]


class MLPModule(L.LightningModule):
    """The MLP with Adam; ``manual``: Lightning's manual optimization, the step written out as the plain loop's."""

    def __init__(self, manual: bool) -> None:
        super().__init__()
        self.net = networks.mlp([TABLE_FEATURES], TABLE_CLASSES, hidden=HIDDEN)
        self.automatic_optimization = not manual

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.automatic_optimization:
            return nn.functional.cross_entropy(self.net(x), y)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def lightning_us(batches: Batches, manual: bool) -> float:
    """CPU µs a step of one epoch over ``batches`` under a bare trainer (no logger, callbacks or progress bar)."""
    clock = StepClock()
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(MLPModule(manual), DataLoader(batches, batch_size=None))
    return clock.us_per_step()


def plain_us(net: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer, batches: Batches) -> float:
    """CPU µs a step of the plain loop's step over ``batches``, timed from the first batch's start to the last one's."""
    starts: list[float] = []
    for x, y in batches:
        starts.append(time.process_time())
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return us_between(starts)


def plain_side(compiled: bool) -> tuple[Callable[[Batches], float], float]:
    """The plain step as a side, and the seconds its first step took (for a compiled network, the compilation)."""
    net = networks.mlp([TABLE_FEATURES], TABLE_CLASSES, hidden=HIDDEN)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(net) if compiled else net
    start = time.perf_counter()
    plain_us(forward, optimizer, random_batches(2))
    return (lambda data: plain_us(forward, optimizer, data)), time.perf_counter() - start


def measure(rounds: int, steps: int, compile_too: bool = True) -> tuple[dict[str, list[float]], float | None]:
    """Each side's CPU µs a step in each round (sides in turns), and the compiled side's first step in seconds."""
    plain, _ = plain_side(compiled=False)
    sides: dict[str, Callable[[Batches], float]] = {
        "plain step": plain,
        "Lightning, automatic optimization": lambda data: lightning_us(data, manual=False),
        "Lightning, manual optimization": lambda data: lightning_us(data, manual=True),
    }
    first_step_s = None
    if compile_too:
        sides["plain step, torch.compile"], first_step_s = plain_side(compiled=True)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        data = random_batches(steps)
        for name, side in sides.items():
            times[name].append(side(data))
    return times, first_step_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled side (its compile: ~20 s)")
    args = parser.parse_args()
    require_two_steps(parser, args.steps)
    quiet_lightning()
    with tempfile.TemporaryDirectory() as cache:  # a cold compile, as a run's first: not from an earlier run's cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        times, first_step_s = measure(args.rounds, args.steps, compile_too=not args.no_compile)
    for name, values in times.items():
        print(f"{name:<36} {statistics.median(values):7.0f} ({min(values):.0f}–{max(values):.0f}) CPU µs a step")
    if first_step_s is not None:
        print(f"torch.compile's first step (the compilation): {first_step_s:.1f} s")


if __name__ == "__main__":
    main()
