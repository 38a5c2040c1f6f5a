"""Where a run came from, as MLflow tags: code, preset, data, DVC stage, and the machine that decides its numbers.

Floating-point results depend on the CPU's instruction set (torch picks AVX2 or AVX-512
kernels at run time, and they sum in different orders), the number of threads, and the
versions of torch and CUDA. Re-running on the same hardware and software reproduces a run
bit for bit; on another machine the last digits move. The ``env.*`` tags record exactly
those deciding facts, so two runs that differ can be compared in the UI and the reason seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from pipeline.tracking.run import DatasetInputRecord

# MLflow refuses tag values over 8,000 characters; ours are short, but a path may not be.
MAX_TAG_LENGTH = 5000
# CPU flags that select kernels in torch/oneDNN/BLAS: the ones worth comparing between machines.
KERNEL_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "neon",
    "asimd",
    "sve",
)


def git_state(root: str | Path) -> dict[str, str]:
    """The commit checked out in ``root`` and whether tracked files differ from it ('unknown' outside git)."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": "unknown" if status is None else str(bool(status)).lower()}


def source_tags(cfg: DictConfig, meta: Mapping[str, Any], experiment: str | None) -> dict[str, str]:
    """The tags that say where a run came from: code, preset, data, and the DVC stage that ran it."""
    tags = git_state(cfg.paths.root_dir)
    tags["pipeline.experiment"] = experiment or "none"
    tags["pipeline.task_name"] = str(cfg.get("task_name", ""))
    tags["data.name"] = str(meta.get("name", ""))
    if "env" in meta:  # reinforcement learning: the environment's id and version (CartPole-v1)
        tags["data.env"] = str(meta["env"])
    for package, version in sorted(meta.get("versions", {}).items()):  # an environment's package
        tags[f"data.version.{package}"] = str(version)
    for filename, record in sorted(meta.get("sources", {}).items()):
        if isinstance(record, Mapping) and "sha256" in record:
            tags[f"data.sha256.{filename}"] = str(record["sha256"])
    for variable, tag in (("DVC_STAGE", "dvc.stage"), ("DVC_EXP_NAME", "dvc.experiment")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    return {key: value[:MAX_TAG_LENGTH] for key, value in tags.items()}


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and its kernel-selecting flags (from /proc/cpuinfo; the platform's name elsewhere)."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, [flag for flag in KERNEL_FLAGS if flag in flags]


def environment_tags() -> dict[str, str]:
    """What decides a run's floating-point results: CPU, kernels torch chose, threads, library and GPU versions."""
    model, flags = cpu_model_and_flags()
    tags = {
        "env.cpu": model,
        "env.cpu_flags": " ".join(flags),
        "env.cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "env.threads": str(torch.get_num_threads()),
        "env.torch": torch.__version__,
        "env.cuda": str(torch.version.cuda),
        "env.cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else "None",
        "env.gpu": ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none",
        "env.python": platform.python_version(),
        "env.numpy": np.__version__,
        "env.platform": platform.platform(),
    }
    return {key: value[:MAX_TAG_LENGTH] for key, value in tags.items()}


SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}  # MLflow's dataset contexts


def dataset_inputs(
    meta: Mapping[str, Any], processed_dir: str | Path, root_dir: str | Path
) -> list[DatasetInputRecord]:
    """The dataset's splits as MLflow inputs named ``<dataset>-<split>``, with digests from the checksums the
    preprocess stage recorded in ``meta.json`` (none for data processed before it recorded them)."""
    folder = Path(processed_dir).absolute()
    with contextlib.suppress(ValueError):  # inside the project: a path that means the same on every clone
        folder = folder.relative_to(Path(root_dir).absolute())
    records = []
    for split, context in SPLIT_CONTEXTS.items():
        md5 = meta.get("splits", {}).get(split, {}).get("md5")
        if md5:
            digest = hashlib.md5(f"{md5['x']}{md5['y']}".encode()).hexdigest()  # 32 characters: MLflow takes 36
            records.append(DatasetInputRecord(f"{meta['name']}-{split}", digest, f"{folder}/{split}_x.npy", context))
    return records
