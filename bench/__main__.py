"""Run the benchmark suite: ``python -m bench`` (what ``make bench`` runs).

Makes the data first (untimed: the project's DVC stages through the mirror, the bench's CSV
tables, tiled MNIST, a migrated tracking store), then runs each benchmark with its cases
interleaved, prints every target's PASS/MISS/SKIP, writes ``bench/results/results.json`` and
``results.md``, and, on a run of the whole suite with its own repeat counts, replaces the README's results
block.

    python -m bench                       # everything (about 20–22 min on an Intel 2-core machine)
    python -m bench --only overhead gpu   # some benchmarks; the README is left alone
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from bench import fixed_costs, gpu, overhead, report, scale, search, setup, time_to_accuracy
from bench.harness import ROOT
from bench.report import Result, Target

# Each takes (repeats, log) and returns its Result.
BENCHMARKS: dict[str, Callable[[int, Callable[[str], None]], Result]] = {
    "overhead": overhead.measure,
    "time_to_accuracy": time_to_accuracy.measure,
    "fixed_costs": fixed_costs.measure,
    "scale": scale.measure,
    "gpu": gpu.measure,
    "search": search.measure,
}
# Runs of each case, unless --repeats says otherwise. The overhead ratios get 5: a verdict there is PASS or MISS
# only when every repeat's ratio is on one side of the limit, and the min–max range of n ratios misses their
# median with chance 2 × (1/2)^n (all of them on one side of it): 25 % for 3, 6 % for 5. With 3, a ratio whose
# median sits near the limit read PASS or MISS by chance often enough that two full runs disagreed.
REPEATS = {"overhead": 5}
DEFAULT_REPEATS = 3
# A full `make bench` leaves out the searches (two 12-trial MNIST searches, about 15 min more): --only search.
DEFAULT = [name for name in BENCHMARKS if name != "search"]


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def failed(name: str, error: Exception) -> Result:
    """A benchmark that crashed still gets a row, so the report says so instead of going missing."""
    result = Result(name, f"{name}: failed", ["error"])
    result.rows.append({"error": f"{type(error).__name__}: {(str(error) or '-').splitlines()[0]}"})
    result.targets.append(Target(f"{name} ran", "failed", "ran to the end", False))
    result.notes.append("The benchmark raised an error; see the output of `make bench`.")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"runs of each case, interleaved (default {DEFAULT_REPEATS}, overhead {REPEATS['overhead']})",
    )
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder of results.json/.md")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README's results block")
    parser.add_argument(
        "--no-setup",
        action="store_true",
        help="the data is there already (e.g. carried to a GPU machine without DVC): make none",
    )
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    names = args.only or DEFAULT
    repeats = {name: args.repeats or REPEATS.get(name, DEFAULT_REPEATS) for name in names}
    command = (
        "make bench"
        if args.only is None and args.repeats is None
        else shlex.join(["python", "-m", "bench", *(argv or sys.argv[1:])])
    )
    started, start = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), time.time()
    log(
        "bench: "
        + ", ".join(f"{name} ×{repeats[name]}" for name in names)
        + ("" if args.no_setup else "; making the data (untimed)")
    )
    if not args.no_setup:
        setup.all_data(scale.TILED if "scale" in names else ())

    results, errors = [], 0
    for name in names:
        log(f"=== {name}")
        try:
            results.append(BENCHMARKS[name](repeats[name], log))
        except Exception as error:  # a benchmark's crash (or bug) is reported, and the others still run
            traceback.print_exc()
            errors += 1
            results.append(failed(name, error))
        log(f"=== {name} done at {(time.time() - start) / 60:.1f} min")

    markdown = report.write(results, Path(args.out), command, started, time.time() - start)
    print("\n" + report.targets_table(results))
    for result in results:
        for target in result.targets:
            print(f"{target.verdict:4}  {target.name}: {target.measured} (target {target.limit})")
    if command == "make bench" and not args.no_readme:  # the README block shows the default suite only
        readme = ROOT / "README.md"
        if report.update_readme(readme, markdown):
            log("README.md: results block updated")
        else:
            log(f"README.md has no {report.README_BEGIN!r} … {report.README_END!r} block: not updated")
    log(f"results in {args.out}/results.md and results.json; {(time.time() - start) / 60:.1f} min in all")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
