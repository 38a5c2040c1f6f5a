"""Benchmark: time per epoch and peak memory as the training split grows (MNIST tiled 1×, 4×, 16×).

``python -m pipeline.train`` on MNIST with its training split repeated 1, 4 and 16 times
(``bench.setup.tiled_mnist``, made before anything is timed; validation and test unchanged),
``data.datamodule.memory_map=true``, one epoch, default callbacks and MLflow tracking, the
cases interleaved. The model is softmax regression at batch 512: the cheapest step, so the
data path's share of an epoch (and any cost that grows with the file) shows the most.

Time per sample is taken over the epoch's training batches only (from the epoch's start to
its validation pass), since validation, checkpointing and logging cost the same at every
size and would flatter the larger ones. Peak memory is the process's ``VmHWM`` (bench.harness.run). The
in-memory path (``memory_map=false``) is run once at 1× and 16× for comparison. Every run
starts with its files in the OS page cache (read once, untimed), as every epoch after a
dataset's first does. The linearity target compares 16× with 4×: both files exceed the 64 MiB
that ``MappedArrayDataset`` gathers from its map, so both are read row by row; 1× is shown too.

Runs use one intra-op thread (``threads=1``): on a 2-core machine shared with other work, two
threads make every small op wait for a descheduled thread, which swamps what is measured here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import setup
from bench.harness import Measured, interleave, median, per_repeat_ratios, pipeline_train, run, spread
from bench.report import Result, range_target

FACTORS = (1, 4, 16)
TILED = tuple(f for f in FACTORS if f > 1)  # made by bench.setup.tiled_mnist
OVERRIDES = (
    "data=mnist",
    "model=logistic_regression",
    "data.datamodule.batch_size=512",
    "trainer.max_epochs=1",
    "test=false",
    "threads=1",
)
MEMORY_LIMIT = 2.0  # peak RSS at 16× over 1×
LINEARITY_LIMIT = 1.25  # time per training sample at 16× over 4× (both read row by row from the file)


def dataset(factor: int) -> Path:
    return setup.project_processed("mnist") if factor == 1 else setup.tiled_mnist(factor)


def warm_page_cache(folder: Path) -> None:
    """Read the split files once (untimed), so every size starts from the OS's page cache, as every epoch
    after a dataset's first does: otherwise the first run after tiling measures the disk instead."""
    for path in sorted(folder.glob("*.npy")):
        with open(path, "rb", buffering=0) as file:
            while file.read(8 << 20):
                pass


def training_rows(folder: Path) -> int:
    return int(json.loads((folder / "meta.json").read_text())["splits"]["train"]["n"])


def train_pass_seconds(measured: Measured) -> float:
    epoch = measured.probe["epochs"][0]
    return epoch["train_end"] - epoch["start"]


def cell(values: list[float], middle: str, ranged: str) -> str:
    """The median, and the range when there was more than one run."""
    return f"{middle} ({ranged})" if len(values) > 1 else middle


def measure(repeats: int, log: Callable[[str], None] = print) -> Result:
    work = setup.WORK / "scale"
    probe = work / "probe.json"
    work.mkdir(parents=True, exist_ok=True)
    folders = {factor: dataset(factor) for factor in FACTORS}  # tiling happens here, before any timing
    rows = {factor: training_rows(folder) for factor, folder in folders.items()}

    def case(factor: int, memory_map: bool) -> Callable[[], Measured]:
        def train() -> Measured:
            warm_page_cache(folders[factor])
            cmd = pipeline_train(
                *OVERRIDES,
                f"data.datamodule.processed_dir={folders[factor]}",
                f"data.datamodule.memory_map={str(memory_map).lower()}",
                probe=probe,
                work=work,
            )
            return run(cmd, env=setup.env(), probe=probe)

        return train

    log("scale: memory-mapped, 1×/4×/16× MNIST")
    mapped = interleave({f"{f}×": case(f, True) for f in FACTORS}, repeats, log)
    log("scale: in memory, 1× and 16× (once)")
    in_memory = interleave({f"{f}×": case(f, False) for f in (1, FACTORS[-1])}, 1, log)
    return summarise(mapped, in_memory, rows, repeats)


def summarise(
    mapped: dict[str, list[Measured]], in_memory: dict[str, list[Measured]], rows: dict[int, int], repeats: int
) -> Result:
    """The table, the targets (per-repeat ratios) and the notes of the runs, by case (``"4×"``)."""
    result = Result(
        "scale",
        "Scale: MNIST training split tiled 1×, 4×, 16× (softmax regression, batch 512)",
        ["training split", "data", "training rows", "s/epoch", "µs/sample (training pass)", "peak RSS MiB"],
    )
    summary: dict[str, dict[str, Any]] = {}
    for label, runs, factors in (("memory-mapped", mapped, FACTORS), ("in memory", in_memory, (1, FACTORS[-1]))):
        for factor in factors:
            measured = runs[f"{factor}×"]
            epoch = [m.epoch_seconds()[0] for m in measured]
            per_sample = [train_pass_seconds(m) / rows[factor] * 1e6 for m in measured]
            rss = [m.peak_rss_mib for m in measured]
            summary[f"{label} {factor}×"] = {"epoch_s": epoch, "us_per_sample": per_sample, "peak_rss_mib": rss}
            result.rows.append(
                {
                    "training split": f"{factor}×",
                    "data": label,
                    "training rows": f"{rows[factor]:,}",
                    "s/epoch": cell(epoch, f"{median(epoch):.2f}", spread(epoch)),
                    "µs/sample (training pass)": cell(per_sample, f"{median(per_sample):.2f}", spread(per_sample)),
                    "peak RSS MiB": cell(rss, f"{median(rss):.0f}", f"{min(rss):.0f}–{max(rss):.0f}"),
                }
            )
    result.raw = summary

    first, middle, last = (f"memory-mapped {f}×" for f in FACTORS)
    us = {key: median(figures["us_per_sample"]) for key, figures in summary.items()}  # medians, for the notes

    def paired(key: str, top: str, bottom: str) -> list[float]:
        return per_repeat_ratios(summary[top][key], summary[bottom][key])

    result.targets += [
        range_target(
            f"peak memory {FACTORS[-1]}× / {FACTORS[0]}× (memory-mapped)",
            paired("peak_rss_mib", last, first),
            MEMORY_LIMIT,
        ),
        range_target(
            f"time per sample {FACTORS[-1]}× / {FACTORS[1]}× (memory-mapped)",
            paired("us_per_sample", last, middle),
            LINEARITY_LIMIT,
        ),
    ]
    growth = {
        label: median(summary[f"{label} {FACTORS[-1]}×"]["peak_rss_mib"])
        - median(summary[f"{label} {FACTORS[0]}×"]["peak_rss_mib"])
        for label in ("memory-mapped", "in memory")
    }
    result.notes += [
        f"{repeats} run(s) per memory-mapped size, interleaved, one of each in-memory size; one epoch per run "
        "(test=false), default callbacks, MLflow tracking into a SQLite store, threads=1.",
        "s/epoch: the whole epoch (training batches, validation pass, checkpoints, logging); µs/sample: the "
        "training batches only, per training row.",
        f"Time per sample is flat from {FACTORS[1]}× to {FACTORS[-1]}× (both read row by row with `os.preadv`, "
        f"the target); at {FACTORS[0]}× the file is under 64 MiB and is gathered from the map like an in-memory "
        f"array: {us[first]:.2f} µs against {us[last]:.2f} µs at {FACTORS[-1]}× "
        f"({us[last] / us[first]:.2f}×: the price of flat memory; in memory, {FACTORS[-1]}× against "
        f"{FACTORS[0]}×: {us[f'in memory {FACTORS[-1]}×'] / us[f'in memory {FACTORS[0]}×']:.2f}×, one run of "
        "each). Each run starts with the files in the OS page cache (read once, untimed).",
        f"Peak RSS from {FACTORS[0]}× to {FACTORS[-1]}×: {growth['memory-mapped']:+.0f} MiB memory-mapped, "
        f"{growth['in memory']:+.0f} MiB in memory. Most of a run's peak is the process itself (PyTorch, "
        "Lightning, MLflow), so the ratio target is loose; the growth is what mapping saves.",
    ]
    return result
