"""Peak memory of reading a folder of images into a memory-mapped array (``pipeline.data.image_folder``).

    OMP_NUM_THREADS=1 python -m bench.image_folder_memory --images 20000 --size 64 --out bench/results

Writes N random-noise RGB PNGs of size × size in 10 class folders (untimed, in a temporary
folder), then, in a fresh child process, lists them (``list_image_folder``), decodes them into an
``np.lib.format.open_memmap`` of N × 3 × 32 × 32 (``decode_images``) and computes the channel
statistics (``channel_statistics``). The child's peak RSS is printed next to the output array's
size and the size of the images decoded at their source size (N × size × size × 3 bytes), which
a reader holding decoded images in Python objects would need on top of its imports.

Then it runs the preprocess stage itself, ``python -m pipeline.preprocess data=my_images`` on the
same folder, once with ``max_images_per_class`` keeping a quarter of the images and once on all of
them: its peak RSS should not grow with the number of images (the ratio of the two is reported).

Peak RSS is given twice: the child's ``ru_maxrss`` (``os.wait4``: the per-child figure of
RUSAGE_CHILDREN), which on Linux also counts the parent's own peak at the child's exec, and the
child's ``VmHWM``, which restarts at exec; its ``VmHWM`` right after the imports is the floor.
Pages of the memory-mapped output count as resident (file-backed, ``RssFile``) once written or
read; the kernel can reclaim them, unlike anonymous memory (``RssAnon``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import ROOT, BenchError, bench_env

CLASSES = 10
TARGET = 32  # the decoded images' height and width


def _status_kib() -> dict[str, int]:
    """This process's VmHWM, VmRSS, RssAnon and RssFile (KiB) from /proc/self/status."""
    keys = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    with open("/proc/self/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status if line.split(":", 1)[0] in keys)
    return {key: int(value.split()[0]) for key, value in fields.items()}


def write_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` random-noise RGB PNGs of ``size`` × ``size``, dealt round-robin into 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"class_{i % CLASSES}" / f"{i:06d}.png", compress_level=1)


def child(images: Path, out_file: Path) -> dict[str, Any]:
    """What the child process measures: list, decode into a memmap, statistics; times and memory."""
    from pipeline.data.image_folder import channel_statistics, decode_images, list_image_folder

    after_imports = _status_kib()["VmHWM"]
    start = time.perf_counter()
    paths, _ = list_image_folder(images).splits["all"]
    listed = time.perf_counter()
    after_list = _status_kib()["VmHWM"]
    x = np.lib.format.open_memmap(out_file, mode="w+", dtype=np.uint8, shape=(len(paths), 3, TARGET, TARGET))
    decode_images(paths, x, (TARGET, TARGET), channels=3)
    x.flush()
    decoded = time.perf_counter()
    after_decode = _status_kib()
    mean, std = channel_statistics(x)
    done = time.perf_counter()
    return {
        "list_s": listed - start,
        "decode_s": decoded - listed,
        "statistics_s": done - decoded,
        "after_imports_kib": after_imports,
        "after_list_kib": after_list,
        "after_decode_kib": after_decode,
        "status_kib": _status_kib(),
        "mean": mean,
        "std": std,
    }


def run_child(images: Path, out_file: Path) -> dict[str, Any]:
    """Run ``child`` in a fresh interpreter; its figures plus its ``ru_maxrss`` and wall time."""
    cmd = [sys.executable, "-m", "bench.image_folder_memory", "--child", str(images), str(out_file)]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(cmd, cwd=ROOT, env=bench_env(), stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        output.seek(0)
        text = output.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise BenchError(f"exit {os.waitstatus_to_exitcode(status)}: {' '.join(cmd)}\n{text[-3000:]}")
    record: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return {**record, "child_peak_rss_kib": usage.ru_maxrss, "child_wall_s": wall}


def run_stage(raw_dir: Path, work: Path, per_class: int | None) -> dict[str, float]:
    """``python -m pipeline.preprocess`` on ``raw_dir/bench_images/images``: its peak RSS (KiB) and wall time."""
    limit = "null" if per_class is None else str(per_class)
    cmd = [sys.executable, "-m", "pipeline.preprocess", "data=my_images", "data.name=bench_images"]
    cmd += [f"paths.raw_dir={raw_dir}", f"paths.processed_dir={work / 'processed'}", f"data.source.path={raw_dir}"]
    cmd += [f"data.source.image_size=[{TARGET},{TARGET}]", f"data.source.max_images_per_class={limit}"]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(cmd, cwd=ROOT, env=bench_env(), stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        output.seek(0)
        text = output.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise BenchError(f"exit {os.waitstatus_to_exitcode(status)}: {' '.join(cmd)}\n{text[-3000:]}")
    return {"peak_rss_kib": usage.ru_maxrss, "wall_s": time.perf_counter() - start}


def table(row: dict[str, Any]) -> str:
    """The figures as a Markdown table (MB = 10⁶ bytes)."""

    def mb(n_bytes: float) -> str:
        return f"{n_bytes / 1e6:.1f} MB"

    n, size, status = row["images"], row["size"], row["status_kib"]
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| images | {n:,} random-noise RGB PNGs of {size}×{size} in {CLASSES} class folders |",
        f"| decoded at source size (N×{size}×{size}×3) | {mb(n * size * size * 3)} |",
        f"| output array (N×3×{TARGET}×{TARGET} uint8, memory-mapped) | {mb(n * 3 * TARGET * TARGET)} |",
        f"| peak RSS of the child (ru_maxrss) | {mb(row['child_peak_rss_kib'] * 1024)} |",
        f"| peak RSS of the child (VmHWM) | {mb(status['VmHWM'] * 1024)} |",
        f"| VmHWM after imports / listing / decoding / statistics | {mb(row['after_imports_kib'] * 1024)} / "
        f"{mb(row['after_list_kib'] * 1024)} / {mb(row['after_decode_kib']['VmHWM'] * 1024)} / "
        f"{mb(status['VmHWM'] * 1024)} |",
        f"| RSS at the end: anonymous / file-backed | {mb(status['RssAnon'] * 1024)} / "
        f"{mb(status['RssFile'] * 1024)} |",
        f"| wall: list / decode / statistics | {row['list_s']:.2f} s / {row['decode_s']:.2f} s / "
        f"{row['statistics_s']:.2f} s |",
        f"| wall: child process in all | {row['child_wall_s']:.2f} s |",
        f"| channel mean / std | {', '.join(f'{m:.4f}' for m in row['mean'])} / "
        f"{', '.join(f'{s:.4f}' for s in row['std'])} |",
    ]
    quarter, whole = row["stage_quarter"], row["stage_all"]
    lines += [
        f"| `pipeline.preprocess`, {n // 4:,} images: peak RSS / wall | {mb(quarter['peak_rss_kib'] * 1024)} / "
        f"{quarter['wall_s']:.1f} s |",
        f"| `pipeline.preprocess`, {n:,} images: peak RSS / wall | {mb(whole['peak_rss_kib'] * 1024)} / "
        f"{whole['wall_s']:.1f} s |",
        f"| peak RSS ratio, 4× the images | {whole['peak_rss_kib'] / quarter['peak_rss_kib']:.2f}× |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.image_folder_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000, help="number of PNGs (default 20000)")
    parser.add_argument("--size", type=int, default=64, help="their height and width (default 64)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder of the .md/.json result")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("IMAGES", "NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        record = child(*args.child)
        print(json.dumps(record))
        return record
    with tempfile.TemporaryDirectory(prefix="image-folder-memory-") as temporary:
        work = Path(temporary)
        images = work / "raw" / "bench_images" / "images"  # where the fetch stage would have put them
        write_images(images, args.images, args.size)
        row = {"images": args.images, "size": args.size, **run_child(images, work / "x.npy")}
        row["stage_quarter"] = run_stage(work / "raw", work, max(1, args.images // 4 // CLASSES))
        row["stage_all"] = run_stage(work / "raw", work, None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "image_folder_memory.json").write_text(json.dumps(row, indent=2) + "\n")
    (args.out / "image_folder_memory.md").write_text(table(row))
    print(table(row), end="")
    return row


if __name__ == "__main__":
    main()
