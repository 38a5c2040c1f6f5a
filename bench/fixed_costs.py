"""Benchmark: fixed costs a user pays whatever the model: start-up, a no-op ``dvc repro``, a small sweep.

(a) Command start → first training step of ``python -m pipeline.train experiment=mnist_cnn``
(default callbacks, MLflow tracking on), from just before the process starts to the timing
probe's ``first_step`` (the probe ends the process there), against the whole wall time of
``python -c "import torch, lightning"``: what any Lightning script pays before its first line.
That command's wall time includes the interpreter's exit (about 1.5 s of freeing torch's
modules here), which the probe's ``os._exit`` skips, so two more rows say what the ratio
hides: the same imports ended by ``os._exit`` (start-up only), and the training command
with ``logger=csv`` (no MLflow: the cost of tracking's start-up); and the imports with MLflow's
client and SQLite store modules: the floor of any Lightning script that tracks into MLflow.
(b) ``dvc repro`` with nothing to do: the image stages (bench/setup.py's ``images()`` has run
them) and, when ``dvc status`` says everything is up to date, the whole pipeline.
(c) A 4-job learning-rate sweep of a tiny CSV experiment (``bench_tiny``), one job after the
other (Hydra's basic launcher) against ``launcher=parallel`` (joblib, 2 jobs at once, one
torch thread each, so 2 cores are not oversubscribed).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench import setup
from bench.harness import (
    ROOT,
    Measured,
    interleave,
    median,
    per_repeat_ratios,
    pipeline_train,
    python,
    run,
    spread,
)
from bench.report import Result, range_target

START_LIMIT = 1.5  # start → first step, as a multiple of `import torch, lightning`
# What opening a run in MLflow's SQLite store imports (its package, then its database layer on the first client)
MLFLOW_IMPORTS = "import mlflow.tracking, mlflow.store.tracking.sqlalchemy_store, sqlalchemy.dialects.sqlite"
SWEEP_LRS = "1e-3,3e-3,1e-2,3e-2"
SWEEP_EPOCHS = 3


def pipeline_up_to_date() -> bool:
    """Whether ``dvc status`` finds nothing to reproduce (only then is a whole-pipeline repro a no-op)."""
    status = subprocess.run(
        [setup.dvc(), "status", "--json"], cwd=ROOT, env=setup.env(), capture_output=True, text=True
    )
    return status.returncode == 0 and json.loads(status.stdout or "{}") == {}


def measure(repeats: int, log: Callable[[str], None] = print, sweep_repeats: int | None = None) -> Result:
    """``sweep_repeats`` (default: ``repeats``) for the sweep, which runs four trainings a side."""
    work = setup.WORK / "fixed_costs"
    work.mkdir(parents=True, exist_ok=True)
    result = Result(
        "fixed_costs",
        "Fixed costs: start-up, a no-op `dvc repro`, a 4-job sweep",
        ["what", "median s", "range s", "note"],
    )
    _start_up(result, work, repeats, log)
    _noop_repro(result, repeats, log)
    _sweep(result, work, sweep_repeats or repeats, log)
    return result


def _start_up(result: Result, work: Path, repeats: int, log: Callable[[str], None]) -> None:
    log("fixed costs: command start → first training step")
    probe = work / "probe.json"

    def first_step(*extra: str) -> Callable[[], float]:
        cmd = pipeline_train(
            "experiment=mnist_cnn", *extra, probe=probe, work=work, probe_options={"exit_after_first_step": True}
        )
        return lambda: run(cmd, env=setup.env(), probe=probe).since_start("first_step")

    def imports(code: str) -> Callable[[], float]:
        return lambda: run([python(), "-c", code], env=setup.env()).wall_s

    runs = interleave(
        {
            "imports": imports("import torch, lightning"),
            "imports, no exit": imports("import os, torch, lightning; os._exit(0)"),
            "imports and MLflow": imports(f"import torch, lightning; {MLFLOW_IMPORTS}"),
            "first step": first_step(),
            "first step, logger=csv": first_step("logger=csv"),
        },
        repeats,
        log,
    )
    base, start = median(runs["imports"]), median(runs["first step"])
    tracked = median(runs["imports and MLflow"])
    ratio = start / base
    rows = [
        (
            "imports",
            '`python -c "import torch, lightning"` (whole process)',
            "the floor any Lightning script pays; the target's yardstick",
        ),
        (
            "imports, no exit",
            "the same imports, ended by `os._exit(0)`",
            f"without the interpreter's exit: {start / median(runs['imports, no exit']):.2f}× this",
        ),
        (
            "imports and MLflow",
            "the same imports and MLflow's client and SQLite store (whole process)",
            f"the floor of a Lightning script tracking into MLflow; the first step: {start / tracked:.2f}× this",
        ),
        (
            "first step",
            "`python -m pipeline.train experiment=mnist_cnn`: start → first training step",
            f"{ratio:.2f}× the imports (target ≤ {START_LIMIT}×)",
        ),
        (
            "first step, logger=csv",
            "the same with `logger=csv` (no MLflow)",
            f"MLflow's start-up: {start - median(runs['first step, logger=csv']):.2f} s",
        ),
    ]
    result.rows += [
        {"what": what, "median s": f"{median(runs[name]):.2f}", "range s": spread(runs[name]), "note": note}
        for name, what, note in rows
    ]
    paired = per_repeat_ratios(runs["first step"], runs["imports"])
    result.targets.append(range_target("start → first step / import torch, lightning", paired, START_LIMIT))
    result.raw["start_up"] = runs
    result.notes.append(
        "Start-up: the training command runs with its default callbacks and MLflow tracking into a "
        "SQLite store; a timing probe ends it at its first training step (Lightning's model summary "
        "and sanity-check validation included)."
    )


def _noop_repro(result: Result, repeats: int, log: Callable[[str], None]) -> None:
    log("fixed costs: no-op dvc repro")
    setup.images()  # not measured: brings the image stages up to date (a no-op when they are)
    cases: dict[str, Callable[[], float]] = {
        "images": lambda: run([setup.dvc(), "repro", *setup.IMAGE_STAGES], env=setup.env()).wall_s
    }
    whole = pipeline_up_to_date()
    if whole:
        cases["pipeline"] = lambda: run([setup.dvc(), "repro"], env=setup.env()).wall_s
    runs = interleave(cases, repeats, log)
    result.rows.append(
        {
            "what": f"no-op `dvc repro {' '.join(setup.IMAGE_STAGES)}`",
            "median s": f"{median(runs['images']):.2f}",
            "range s": spread(runs["images"]),
            "note": "stages up to date: DVC only checks hashes",
        }
    )
    if whole:
        result.rows.append(
            {
                "what": "no-op `dvc repro` (whole pipeline)",
                "median s": f"{median(runs['pipeline']):.2f}",
                "range s": spread(runs["pipeline"]),
                "note": "every stage up to date",
            }
        )
    else:
        result.notes.append(
            "The whole pipeline's no-op `dvc repro` was not measured: `dvc status` listed changed "
            "stages, so it would not have been a no-op."
        )
    result.raw["noop_repro"] = runs


def _sweep(result: Result, work: Path, repeats: int, log: Callable[[str], None]) -> None:
    log(f"fixed costs: 4-job sweep of bench_tiny ({setup.TINY_ROWS:,} rows), sequential vs joblib")
    setup.tiny_table()
    overrides = [
        *setup.tiny_overrides(),
        "model=mlp_classifier",
        f"optimizer.lr={SWEEP_LRS}",
        f"trainer.max_epochs={SWEEP_EPOCHS}",
        "callbacks.progress_bar.refresh_rate=0",
    ]

    def sweep(*extra: str) -> Callable[[], Measured]:
        cmd = pipeline_train("-m", *overrides, *extra, work=work)
        return lambda: run(cmd, env=setup.env())

    runs = interleave({"sequential": sweep(), "parallel": sweep("launcher=parallel")}, repeats, log)
    walls = {name: [m.wall_s for m in measured] for name, measured in runs.items()}
    speedup = median(walls["sequential"]) / median(walls["parallel"])
    result.rows += [
        {
            "what": (
                f"4-job sweep, tiny CSV ({setup.TINY_ROWS:,} rows, MLP, {SWEEP_EPOCHS} epochs): one job after another"
            ),
            "median s": f"{median(walls['sequential']):.2f}",
            "range s": spread(walls["sequential"]),
            "note": "Hydra's basic launcher",
        },
        {
            "what": "the same sweep, `launcher=parallel`",
            "median s": f"{median(walls['parallel']):.2f}",
            "range s": spread(walls["parallel"]),
            "note": f"joblib, 2 jobs × 1 thread; speed-up {speedup:.2f}×",
        },
    ]
    result.notes.append(
        f"The sweep rows are medians of {repeats} runs per side; whole process, sweep summary "
        "(MLflow parent run) included. "
        "The basic launcher runs every job in the launching process, so torch, Lightning and "
        "MLflow are imported once; the joblib launcher's worker processes import them again "
        "each, which a job of a few seconds does not win back."
    )
    result.raw["sweep"] = walls
