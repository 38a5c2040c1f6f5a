"""``torch.profiler`` on the same training batches of an overhead case, pipeline against bare Lightning: the
ops each side runs, their counts and self CPU time, per call. (Not part of ``make bench``.)

    python -m bench.op_profile "MLP on a CSV table" --repeats 2

Both sides get the ``OpProfile`` callback: the pipeline by a Hydra override, ``bench.bare_lightning``
by patching the Trainer it builds, in a child process. Each run writes its table
as JSON; the medians over the runs are printed, largest differences first.
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
from torch.profiler import ProfilerActivity, profile

from bench import setup
from bench.harness import python
from bench.overhead import case_named, cases


class OpProfile(L.Callback):
    """Profiles training batches ``start`` to ``start + steps - 1`` of the first epoch; writes op → [count, self µs]."""

    def __init__(self, path: str, start: int = 30, steps: int = 150) -> None:
        self.path, self.start, self.steps = Path(path), start, steps
        self.profiler: Any = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.start:
            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.profiler is not None and batch_idx == self.start + self.steps - 1:
            self.profiler.__exit__(None, None, None)
            ops = {e.key: [e.count, e.self_cpu_time_total] for e in self.profiler.key_averages()}
            self.path.write_text(json.dumps(ops), encoding="utf-8")
            self.profiler = None


def profile_bare(path: str, bare_args: list[str]) -> None:
    """``bench.bare_lightning`` with ``OpProfile`` added to the Trainer it builds (in this process)."""
    build = L.Trainer.__init__

    def with_profile(trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        build(trainer, *args, **{**kwargs, "callbacks": [*(kwargs.get("callbacks") or []), OpProfile(path)]})

    L.Trainer.__init__ = with_profile  # type: ignore[method-assign, assignment]
    sys.argv = ["bench.bare_lightning", *bare_args]
    runpy.run_module("bench.bare_lightning", run_name="__main__")


def medians(paths: list[Path]) -> dict[str, tuple[int, float]]:
    tables = [json.loads(path.read_text()) for path in paths]
    return {
        op: (tables[0].get(op, [0])[0], statistics.median(t.get(op, [0, 0.0])[1] for t in tables))
        for op in set().union(*tables)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=[case.short for case in cases()])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--override", action="append", default=[], help="a Hydra override of the pipeline's side")
    parser.add_argument("--bare", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.bare:
        profile_bare(args.bare[0], args.bare[1:])
        return
    setup.all_data(())
    case = case_named(args.case)
    work = setup.WORK / "op_profile"
    work.mkdir(parents=True, exist_ok=True)
    for repeat in range(args.repeats):
        out = work / f"pipeline{repeat}.json"
        callback = f"+callbacks.op_profile={{_target_: bench.op_profile.OpProfile, path: '{out}'}}"
        command = case.pipeline_command(1, work, *args.override, callback)
        subprocess.run(command, env=setup.env(), check=True, capture_output=True)
        bare = [str(work / f"bare{repeat}.json"), *case.baseline_args(1, work / "probe.json")]
        command = [python(), "-m", "bench.op_profile", args.case, "--bare", *bare]
        subprocess.run(command, env=setup.env(), check=True, capture_output=True)
    report(*(medians([work / f"{side}{r}.json" for r in range(args.repeats)]) for side in ("pipeline", "bare")))


def report(pipeline: dict[str, tuple[int, float]], bare: dict[str, tuple[int, float]]) -> None:
    """The 25 ops whose self CPU time differs most, then the totals."""
    print(f"{'op':44} {'calls':>13} {'self ms':>15} {'µs a call':>15}   (pipeline / bare)")
    for op in sorted(
        set(pipeline) | set(bare), key=lambda o: -abs(pipeline.get(o, (0, 0))[1] - bare.get(o, (0, 0))[1])
    )[:25]:
        (pc, ps), (bc, bs) = pipeline.get(op, (0, 0.0)), bare.get(op, (0, 0.0))
        per_call = f"{ps / max(pc, 1):7.1f} {bs / max(bc, 1):7.1f}"
        print(f"{op[:44]:44} {pc:6d} {bc:6d} {ps / 1e3:7.1f} {bs / 1e3:7.1f} {per_call}")
    total = [sum(s for _, s in side.values()) / 1e3 for side in (pipeline, bare)]
    print(f"self CPU ms in all: {total[0]:.1f} against {total[1]:.1f}")


if __name__ == "__main__":
    main()
