"""Process-wide settings made once, before any tensor work: the C allocator, torch's threads, the GPU check,
and deterministic mode's NaN fill of new tensors.

Why a module of their own rather than in ``pipeline.train``: ``python -m pipeline.train`` runs that module as
``__main__``, and Hydra's joblib launcher (``launcher=parallel``) sends its functions to the workers by value,
with the torch submodules they name; ``torch.utils.deterministic`` is a module of its own class, which the
pickler refuses. Functions of an imported module travel by reference.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from pipeline.allocator import tune_allocator
from pipeline.gpu_probe import drop_nvml_check_without_gpu


def configure_process(cfg: DictConfig) -> None:
    """``tune_allocator``, ``fill_uninitialized_memory`` and ``threads`` of conf/train.yaml."""
    if cfg.get("tune_allocator", True):
        tune_allocator()
    # Under trainer.deterministic=true torch fills each new tensor with NaN before an op writes it (a
    # debugging aid); ops write their outputs whole, so no result depends on it (bench/README.md).
    fill = bool(cfg.get("fill_uninitialized_memory", False))
    torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]
    drop_nvml_check_without_gpu()
    if cfg.get("threads"):  # parallel sweep jobs: one or few threads each, not one per core each
        torch.set_num_threads(int(cfg.threads))
