"""Lightning's NVML-based CUDA check is dropped only where there is no CUDA device, and then the
optimizer's per-step device check stops trying to load NVML."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pipeline import gpu_probe


def test_the_check_is_dropped_only_without_a_cuda_device(monkeypatch):
    monkeypatch.setenv(gpu_probe.NVML_CHECK, "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not gpu_probe.drop_nvml_check_without_gpu()
    assert gpu_probe.NVML_CHECK in os.environ
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_probe.drop_nvml_check_without_gpu()
    assert gpu_probe.NVML_CHECK not in os.environ
    assert not gpu_probe.drop_nvml_check_without_gpu()  # nothing left to drop


@pytest.mark.skipif(torch.cuda.is_available(), reason="the per-step NVML load happens only without a GPU")
def test_after_the_drop_an_adam_step_no_longer_tries_to_load_nvml():
    script = """
import ctypes, lightning, torch
from pipeline.gpu_probe import drop_nvml_check_without_gpu
loads = []
real_init = ctypes.CDLL.__init__
def counting(self, name, *args, **kwargs):
    loads.append(name)
    return real_init(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = counting
p = torch.nn.Parameter(torch.ones(3)); opt = torch.optim.Adam([p])
def steps():
    for _ in range(5):
        p.grad = torch.ones(3); opt.step()
steps(); before = sum("nvidia-ml" in str(n) for n in loads)
drop_nvml_check_without_gpu(); loads.clear(); steps()
print(before, sum("nvidia-ml" in str(n) for n in loads))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    if not torch.backends.cuda.is_built():
        assert out == ["0", "0"]  # a CPU-only build never looks for NVML
    else:
        assert out == ["5", "0"]
