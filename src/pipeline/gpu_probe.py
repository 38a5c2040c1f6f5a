"""Stop torch from looking for NVIDIA's library at every optimizer step on a machine without a GPU.

Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` when imported, so that asking whether CUDA is
available reads NVML instead of initialising CUDA (which would break CUDA in forked children).
``Adam.step`` and ``AdamW.step`` ask that question every step, and where torch is a CUDA build but
the machine has no NVIDIA driver, the NVML path tries to load ``libnvidia-ml.so.1`` again each
time (a failure is never cached): 48-85 µs a check here, against 2-4 µs without the variable
(docs/performance.md), about 2 % of a small MLP's step. Without a CUDA device there is nothing a
fork could break, so the check goes back to torch's own.
"""

from __future__ import annotations

import os

import torch

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def drop_nvml_check_without_gpu() -> bool:
    """Unset Lightning's NVML-based CUDA check where no CUDA device is available; True if it was unset."""
    if os.environ.get(NVML_CHECK) != "1" or torch.cuda.is_available():
        return False
    del os.environ[NVML_CHECK]
    return True
