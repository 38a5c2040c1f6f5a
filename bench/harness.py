"""Run commands as whole processes, interleave cases over repeats, and summarise with medians.

Every figure is measured in a fresh process started by ``run`` (wall clock from just before
the process starts, peak resident memory from its ``VmHWM``, polled every 5 ms), the
cases of a benchmark take turns within each repeat (so a slow spell of a noisy machine hits
every case alike), and reports give medians and ratios of medians.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """A benchmarked command failed: the message has its command line and the end of its output."""


@dataclass
class Measured:
    """One process: wall seconds from its start, peak RSS in MiB, and what its timing probe wrote."""

    start: float
    wall_s: float
    peak_rss_mib: float
    probe: dict[str, Any] = field(default_factory=dict)

    def since_start(self, key: str) -> float:
        return float(self.probe[key]) - self.start

    def epoch_seconds(self) -> list[float]:
        return [e["end"] - e["start"] for e in self.probe.get("epochs", []) if "end" in e]

    def epoch_cpu_seconds(self) -> list[float]:
        """The process's CPU time (user + system, every thread) per epoch: unlike wall time, not stretched by
        another process holding a core."""
        return [e["cpu_end"] - e["cpu_start"] for e in self.probe.get("epochs", []) if "cpu_end" in e]


def python() -> str:
    return sys.executable


def bench_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmarked process: this one's, with the project root importable (for probes)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HYDRA_FULL_ERROR", "1")
    env.update(extra or {})
    return env


def run(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    probe: Path | None = None,
    cwd: Path = ROOT,
    timeout: float = 900,
) -> Measured:
    """Run ``cmd`` to the end; raise BenchError with its output if it fails."""
    if probe is not None and probe.exists():
        probe.unlink()
    with tempfile.TemporaryFile() as output:
        start = time.time()
        process = subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env or bench_env()), stdout=output, stderr=subprocess.STDOUT
        )
        deadline = start + timeout
        peak_kib = 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, high_water_kib(process.pid))
            if time.time() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.005)
        wall = time.time() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            output.seek(0)
            tail = output.read().decode(errors="replace")[-3000:]
            raise BenchError(f"exit {process.returncode} after {wall:.1f} s: {shlex.join(cmd)}\n{tail}")
    record = json.loads(probe.read_text()) if probe is not None and probe.exists() else {}
    # ru_maxrss of a child keeps the high-water mark of the process it was forked from (across exec):
    # after this process has held a large array, every child would report at least that much.
    return Measured(start=start, wall_s=wall, peak_rss_mib=(peak_kib or usage.ru_maxrss) / 1024, probe=record)


def high_water_kib(pid: int) -> int:
    """The peak resident memory of ``pid``'s current program (``VmHWM``; it restarts at exec); 0 where unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def interleave(
    cases: Mapping[str, Callable[[], Any]], repeats: int, log: Callable[[str], None] = print
) -> dict[str, list[Any]]:
    """Each case once per repeat, in turn (case order rotates each repeat); their results by case."""
    results: dict[str, list[Any]] = {name: [] for name in cases}
    names = list(cases)
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            result = cases[name]()
            results[name].append(result)
            log(f"  [{repeat + 1}/{repeats}] {name}: {describe(result)}")
    return results


def describe(result: Any) -> str:
    if isinstance(result, tuple):
        return ", ".join(describe(part) for part in result)
    if isinstance(result, Measured):
        return f"{result.wall_s:.2f} s wall, {result.peak_rss_mib:.0f} MiB"
    if isinstance(result, float):
        return f"{result:.3f}"
    return str(result)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def per_repeat_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """``numerators[i] / denominators[i]``: the two figures of one repeat met the same spell of the machine."""
    return [top / bottom for top, bottom in zip(numerators, denominators, strict=True)]


def spread(values: Sequence[float]) -> str:
    """``min–max`` of the repeats, for the tables."""
    return f"{min(values):.2f}–{max(values):.2f}"


def pipeline_train(
    *overrides: str, probe: Path | None = None, work: Path, probe_options: Mapping[str, bool] | None = None
) -> list[str]:
    """``python -m pipeline.train`` with its run folders under ``work`` and an optional timing probe
    (``bench.probes.TimingProbe``; ``probe_options`` are its keyword arguments)."""
    cmd = [python(), "-m", "pipeline.train", *overrides, f"paths.log_dir={work / 'logs'}"]
    if probe is not None:
        options = "".join(f", {key}: {str(value).lower()}" for key, value in (probe_options or {}).items())
        cmd.append(f"+callbacks.bench_probe={{_target_: bench.probes.TimingProbe, path: '{probe}'{options}}}")
    return cmd
