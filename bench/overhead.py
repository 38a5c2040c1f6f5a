"""Benchmark 1: the pipeline's time per epoch against a plain PyTorch loop on the same network and data.

(a) ``bench.plain_loop``: the network built by the same builder, the preprocessed arrays as
float tensors sliced per step, the same optimizer, batch size and number of steps, and a
validation pass per epoch. (b) ``python -m pipeline.train`` as users run it: default
callbacks (checkpoints, early stopping, LR monitor, progress bar, figures), MLflow logging on,
with a timing probe. (c) ``bench.bare_lightning``: (a)'s tensors, net and optimizer under a bare
``L.Trainer`` (no callbacks, logger or metrics): the floor any Lightning pipeline stands on.
An epoch is timed from its start to the end of its validation pass, checkpoints and logging;
the target is on (b)/(a); (c)/(a) shows how much of it Lightning's own loop takes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import setup
from bench.harness import Measured, interleave, median, per_repeat_ratios, pipeline_train, python, run, spread
from bench.report import Result, range_target


@dataclass
class Case:
    label: str
    short: str  # the label in the targets table
    limit: float  # the target ratio (b)/(a)
    steps: int | None  # training batches per epoch (None: the whole split), the same on both sides
    pipeline: list[str]  # overrides of python -m pipeline.train
    plain: list[str]  # arguments of bench.plain_loop

    def pipeline_command(self, epochs: int, work: Path, *overrides: str, probe: Path | None = None) -> list[str]:
        """``python -m pipeline.train`` of this case as benchmarked (its step limit, no test pass), then
        ``overrides``."""
        steps = [f"+trainer.limit_train_batches={self.steps}"] if self.steps else []
        settings = [*self.pipeline, *steps, f"trainer.max_epochs={epochs}", "test=false"]
        return pipeline_train(*settings, *overrides, probe=probe, work=work)

    def baseline_args(self, epochs: int, out: Path) -> list[str]:
        """The arguments of ``bench.plain_loop`` and ``bench.bare_lightning`` for this case."""
        steps = ["--steps-per-epoch", str(self.steps)] if self.steps else []
        return [*self.plain, *steps, "--epochs", str(epochs), "--out", str(out)]

    def baseline_command(self, module: str, epochs: int, out: Path, *extra: str) -> list[str]:
        """``python -m <module>`` (``bench.plain_loop`` or ``bench.bare_lightning``) on this case, then ``extra``."""
        return [python(), "-m", module, *self.baseline_args(epochs, out), *extra]


STEPS = 200  # of MNIST's 430 batches of 128: the CNN cases' epochs, to keep `make bench` near 20 minutes


def case_named(short: str) -> Case:
    """The case whose targets-table label is ``short`` (the investigation tools take it by that name)."""
    return next(case for case in cases() if case.short == short)


def cases() -> list[Case]:
    mnist = str(setup.project_processed("mnist"))
    return [
        Case(
            "course CNN (5,521 params), MNIST, batch 128",
            "course CNN",
            1.05,
            STEPS,
            ["experiment=mnist_cnn", "model=tiny_cnn"],
            [
                "--processed-dir",
                mnist,
                "--net",
                "tiny_cnn",
                "--optimizer",
                "adam",
                "--lr",
                "0.001",
                "--batch-size",
                "128",
            ],
        ),
        Case(
            "strong CNN (width 16), MNIST, batch 128",
            "strong CNN",
            1.05,
            STEPS,
            ["experiment=mnist_strong", "data.datamodule.augment=null", "scheduler=none"],
            [
                "--processed-dir",
                mnist,
                "--net",
                "strong_cnn",
                "--net-kwargs",
                json.dumps({"width": 16, "convs": [1, 2, 2]}),
                "--optimizer",
                "adamw",
                "--lr",
                "0.003",
                "--weight-decay",
                "0.01",
                "--batch-size",
                "128",
            ],
        ),
        Case(
            f"MLP 256-256, CSV table {setup.TABLE_ROWS:,}×{setup.TABLE_FEATURES}, batch 512",
            "MLP on a CSV table",
            1.25,
            None,
            [*setup.table_overrides(), "model=mlp_classifier", "model.net.hidden=[256,256]"],
            [
                "--processed-dir",
                str(setup.PROCESSED / "bench_table"),
                "--net",
                "mlp",
                "--net-kwargs",
                json.dumps({"hidden": [256, 256]}),
                "--optimizer",
                "adam",
                "--lr",
                "0.001",
                "--batch-size",
                "512",
            ],
        ),
    ]


def measure(repeats: int, log: Callable[[str], None] = print, epochs: int = 1) -> Result:
    work = setup.WORK / "overhead"
    probe = work / "probe.json"
    work.mkdir(parents=True, exist_ok=True)
    result = Result(
        "overhead",
        "Overhead: pipeline vs a plain PyTorch loop (time per epoch)",
        [
            "case",
            "plain loop s/epoch",
            "pipeline s/epoch",
            "ratio (wall)",
            "ratio (CPU)",
            "judged on",
            "bare Lightning / plain",
            "target",
        ],
    )
    for case in cases():
        log(f"overhead: {case.label}")

        def pipeline(case: Case = case) -> Measured:
            return run(case.pipeline_command(epochs, work, probe=probe), env=setup.env(), probe=probe)

        def baseline(module: str, case: Case = case) -> Measured:
            return run(case.baseline_command(module, epochs, probe), env=setup.env(), probe=probe)

        sides = {
            "plain": functools.partial(baseline, "bench.plain_loop"),
            "pipeline": pipeline,
            "bare": functools.partial(baseline, "bench.bare_lightning"),
        }
        runs = interleave(sides, repeats, log)
        ratios = {clock: paired_ratios(runs, clock) for clock in CLOCKS}
        judged = steadier(ratios)
        floor = paired_ratios(runs, judged, "bare")
        per_epoch = {name: [mean_epoch(m, "wall") for m in measured] for name, measured in runs.items()}
        result.rows.append(
            {
                "case": case.label,
                "plain loop s/epoch": f"{median(per_epoch['plain']):.2f} ({spread(per_epoch['plain'])})",
                "pipeline s/epoch": f"{median(per_epoch['pipeline']):.2f} ({spread(per_epoch['pipeline'])})",
                "ratio (wall)": f"{median(ratios['wall']):.3f} ({spread(ratios['wall'])})",
                "ratio (CPU)": f"{median(ratios['cpu']):.3f} ({spread(ratios['cpu'])})",
                "judged on": judged,
                "bare Lightning / plain": f"{median(floor):.3f} ({spread(floor)})",
                "target": f"≤ {case.limit}",
            }
        )
        result.targets.append(range_target(f"overhead ratio, {case.short} ({judged})", ratios[judged], case.limit))
        result.raw[case.label] = {
            "per_epoch_wall_s": per_epoch,
            "per_epoch_cpu_s": {name: [mean_epoch(m, "cpu") for m in measured] for name, measured in runs.items()},
            "ratios": ratios,
            "judged_on": judged,
            "bare_lightning_ratios": floor,
        }
    result.notes.append(
        f"{epochs} epoch(s) per run ({STEPS} training batches an epoch for the CNNs, the whole "
        f"split for the MLP, then the whole validation split), {repeats} runs per side, "
        "interleaved; the pipeline runs "
        "with its default callbacks and MLflow tracking into a SQLite store (test=false: the test "
        "pass is not part of an epoch). Ratios pair each repeat's pipeline run with the plain run of the same "
        "repeat; a verdict is PASS or MISS only when every repeat's ratio is on one side of the target "
        "(else UNSURE), judged on the clock (wall or the process's CPU time) whose ratios varied less, "
        "relative to their median, in this run."
    )
    result.notes.append(
        "Bare Lightning / plain: `bench/bare_lightning.py`, the plain loop's tensors, network and optimizer "
        "under an `L.Trainer` with no callbacks, logger, metrics, checkpoints or progress bar, paired with the "
        "same repeat's plain run on the judged clock. It is the floor of any Lightning pipeline: where it is "
        "already above the target, the rest of the pipeline's ratio is what the pipeline itself adds."
    )
    return result


CLOCKS = ("wall", "cpu")


def mean_epoch(measured: Measured, clock: str) -> float:
    """A run's mean seconds per epoch by the wall clock or the process's CPU time."""
    seconds = measured.epoch_seconds() if clock == "wall" else measured.epoch_cpu_seconds()
    return sum(seconds) / len(seconds)


def paired_ratios(runs: dict[str, list[Measured]], clock: str, side: str = "pipeline") -> list[float]:
    """``side`` / plain per repeat, in mean seconds per epoch by ``clock``."""
    return per_repeat_ratios([mean_epoch(m, clock) for m in runs[side]], [mean_epoch(m, clock) for m in runs["plain"]])


def steadier(ratios: dict[str, list[float]]) -> str:
    """The clock whose ratios spread least relative to their median (wall on a tie)."""
    return min(CLOCKS, key=lambda clock: (max(ratios[clock]) - min(ratios[clock])) / median(ratios[clock]))
