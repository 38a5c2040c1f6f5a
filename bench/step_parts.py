"""What the pipeline's classifier runs per training step beside the network, part by part (not in ``make bench``).

The MLP case's network (50-256-256-7) on a batch of 512, one torch thread, no trainer, CPU µs a call: the
plain loop's whole step (forward, loss, backward, Adam), the same step through the module's ``_step``, the
bare forward and loss, the same through ``ClassificationModule``, its whole ``model_step``, and alone the
parts the module adds (the batch's ``argmax``, the grouped metric update, the loss's weighted mean). The
parts run in turns, several rounds after a warm-up round; medians (min–max) are printed:

    python -m bench.step_parts --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.setup import TABLE_CLASSES, TABLE_FEATURES
from pipeline.models import networks
from pipeline.models.classification import ClassificationModule
from pipeline.models.metrics import PendingUpdates

BATCH, HIDDEN = 512, [256, 256]  # the overhead benchmark's MLP case


def cpu_us_per_call(call: Callable[[], object], calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - start) / calls * 1e6


def parts() -> dict[str, Callable[[], object]]:
    """Each part as a call; the module wraps the very network the bare side runs."""
    net = networks.mlp([TABLE_FEATURES], TABLE_CLASSES, hidden=HIDDEN)  # what model=mlp_classifier builds
    module = ClassificationModule(
        TABLE_CLASSES,
        net=lambda **_: net,
        input_shape=[TABLE_FEATURES],
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
    )
    x, y = torch.randn(BATCH, TABLE_FEATURES), torch.randint(0, TABLE_CLASSES, (BATCH,))
    loss_fn = nn.CrossEntropyLoss()
    logits = net(x).detach()
    loss = loss_fn(logits, y).detach()
    grouped = PendingUpdates(module.val_metrics)  # val's collection: model_step's own updates go to train's
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def plain_step() -> None:  # the plain loop's step, the denominator of the parts' shares
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()

    def module_step() -> None:  # the same with the module's model_step and weighted-mean loss, no trainer
        optimizer.zero_grad(set_to_none=True)
        module._step((x, y), "train").backward()
        optimizer.step()

    return {
        "plain step": plain_step,
        "module step": module_step,
        "bare forward + loss": lambda: loss_fn(net(x), y),
        "module forward + loss": lambda: module.loss_fn(module(x), y),
        "model_step": lambda: module.model_step((x, y), "train"),
        "argmax": lambda: logits.argmax(dim=1),
        "grouped metric update": lambda: grouped.update(logits, y),
        "weighted-mean loss": lambda: module.train_loss.update(loss * module.loss_scale, weight=BATCH),
    }


def measure(rounds: int, calls: int) -> dict[str, list[float]]:
    """CPU µs a call of each part in each of ``rounds`` rounds in turns, after one warm-up round."""
    calls_of = parts()
    times: dict[str, list[float]] = {name: [] for name in calls_of}
    for round_index in range(rounds + 1):
        for name, call in calls_of.items():
            value = cpu_us_per_call(call, calls)
            if round_index:
                times[name].append(value)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1024, help="calls of each part a round (a multiple of 32)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, values in measure(args.rounds, args.calls).items():
        print(f"{name:<24} {statistics.median(values):8.1f} ({min(values):.1f}–{max(values):.1f}) CPU µs a call")


if __name__ == "__main__":
    main()
