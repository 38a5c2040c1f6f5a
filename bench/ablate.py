"""The pipeline's seconds per epoch in an overhead case with parts of it switched off, in turns. (Not part of
``make bench``.) Each variant is a set of Hydra overrides; ``default`` is the case as benchmarked:

    python -m bench.ablate "MLP on a CSV table" --repeats 3 --epochs 3 \
        --variant "callbacks=none" --variant "logger=csv" --variant "trainer.deterministic=false"

``--floors`` adds the plain loop, bare Lightning, and the pipeline's module under bare Lightning
(``bench.bare_lightning --module pipeline``) to the turns: plain → bare is Lightning's loop, bare → bare with
the pipeline's module is the module's code, and the rest up to ``default`` is the pipeline's trainer
(callbacks, logger, datamodule, settings).
"""

from __future__ import annotations

import argparse
import functools
import statistics

from bench import setup
from bench.harness import Measured, interleave, run
from bench.overhead import case_named, cases, mean_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=[case.short for case in cases()])
    parser.add_argument("--variant", action="append", default=[], help="space-separated overrides (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--floors", action="store_true", help="also the plain loop, bare Lightning and bare + module")
    args = parser.parse_args()
    setup.all_data(())  # made once; no scaled copies
    case = case_named(args.case)
    work = setup.WORK / "ablate"
    work.mkdir(parents=True, exist_ok=True)
    probe = work / "probe.json"

    def side(overrides: list[str]) -> Measured:
        return run(case.pipeline_command(args.epochs, work, *overrides, probe=probe), env=setup.env(), probe=probe)

    def baseline(module: str, *extra: str) -> Measured:
        return run(case.baseline_command(module, args.epochs, probe, *extra), env=setup.env(), probe=probe)

    variants = {"default": [], **{variant: variant.split() for variant in args.variant}}
    sides = {name: functools.partial(side, overrides) for name, overrides in variants.items()}
    if args.floors:
        sides["plain loop"] = functools.partial(baseline, "bench.plain_loop")
        sides["bare Lightning"] = functools.partial(baseline, "bench.bare_lightning")
        sides["bare + pipeline module"] = functools.partial(baseline, "bench.bare_lightning", "--module", "pipeline")
    runs = interleave(sides, args.repeats, print)
    for name, measured in runs.items():
        cpu, wall = ([mean_epoch(m, clock) for m in measured] for clock in ("cpu", "wall"))
        print(
            f"{name}: CPU s/epoch {statistics.median(cpu):.3f} ({min(cpu):.3f}–{max(cpu):.3f}), "
            f"wall {statistics.median(wall):.3f} ({min(wall):.3f}–{max(wall):.3f})"
        )


if __name__ == "__main__":
    main()
