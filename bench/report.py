"""What a benchmark returns, and how results become JSON, a Markdown table and the README's section."""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

README_BEGIN = "<!-- bench:begin (written by `make bench`; edit bench/, not this block) -->"
README_END = "<!-- bench:end -->"


@dataclass
class Target:
    """One of the issue's targets: what was measured against what limit, and whether it holds.

    ``unsure``: the repeats fell on both sides of the limit, so the run cannot tell (``UNSURE``)."""

    name: str
    measured: str
    limit: str
    holds: bool | None  # None: not measured here (e.g. no GPU)
    unsure: bool = False

    @property
    def verdict(self) -> str:
        if self.holds is None:
            return "SKIP"
        return "UNSURE" if self.unsure else "PASS" if self.holds else "MISS"


def range_target(
    name: str, values: Sequence[float], limit: float, at_most: bool = True, unit: str = "", digits: int = 3
) -> Target:
    """A target judged on every repeat, not on the median alone: PASS when the whole min–max range of ``values``
    is within ``limit`` (≤ it, or ≥ it with ``at_most=False``), MISS when the whole range is outside,
    UNSURE when the range straddles it (a noisy machine cannot tell a regression from noise)."""
    low, high = min(values), max(values)
    inside = [v <= limit if at_most else v >= limit for v in (low, high)]
    measured = f"{statistics.median(values):.{digits}f}{unit} ({low:.{digits}f}–{high:.{digits}f})"
    sign = "≤" if at_most else "≥"
    return Target(name, measured, f"{sign} {limit:g}{unit}", all(inside), unsure=any(inside) and not all(inside))


@dataclass
class Result:
    """A benchmark's table (rows of column → text), its targets, and notes on how it was measured."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = [
            f"#### {self.title}",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(str(row.get(c, "")) for c in self.columns) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def machine() -> dict[str, Any]:
    """What the figures depend on: the CPU's model (its kernels), cores, threads, versions and any GPU."""
    import os

    from pipeline.tracking.provenance import cpu_model_and_flags

    model, flags = cpu_model_and_flags()
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def targets_table(results: list[Result]) -> str:
    lines = ["| target | measured | limit | verdict |", "|---|---|---|---|"]
    for result in results:
        lines += [f"| {t.name} | {t.measured} | {t.limit} | {t.verdict} |" for t in result.targets]
    return "\n".join(lines) + "\n"


def write(results: list[Result], out_dir: Path, command: str, started: str, wall_s: float) -> str:
    """``results.json`` and ``results.md`` in ``out_dir``; returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    header = (
        f"Measured by `{command}` on {started} ({info['cpus']} CPUs, {info['cpu']}, torch {info['torch']}, "
        f"Python {info['python']}; {wall_s / 60:.1f} min in all). Medians of the repeats; "
        "ranges are min–max.\n"
    )
    markdown = header + "\n" + targets_table(results) + "\n" + "\n".join(r.markdown() for r in results)
    payload = {
        "command": command,
        "started": started,
        "wall_s": round(wall_s, 1),
        "machine": info,
        "results": [asdict(r) for r in results],
    }
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "results.json")
    tmp = out_dir / "results.md.tmp"
    tmp.write_text(markdown, encoding="utf-8")
    tmp.replace(out_dir / "results.md")
    return markdown


def update_readme(readme: Path, markdown: str) -> bool:
    """Replace the README's block between the bench markers; False when the markers are missing."""
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{README_BEGIN}\n{markdown.rstrip()}\n{README_END}{tail}", encoding="utf-8")
    tmp.replace(readme)
    return True
