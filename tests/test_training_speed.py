"""What the benchmarks made faster must still train the same: per-epoch metric logging, per-step
one-cycle schedules, the malloc tuning, and data kept in device memory."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
import torch

from pipeline.allocator import tune_allocator
from pipeline.data.datamodule import ArrayDataModule, DataConfigError
from pipeline.train import train
from tests.conftest import history, make_cfg


def metrics_rows(tmp_path) -> list[dict[str, str]]:
    return history(tmp_path / "run" / "csv" / "version_0" / "metrics.csv")


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(row[name]) for row in rows if row.get(name)]


def test_one_cycle_schedule_steps_every_batch_over_the_whole_run(processed, tmp_path):
    # blobs: 120 training rows at batch 16 -> 8 steps an epoch, 24 in 3 epochs.
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=blobs",
        "model=logistic_regression",
        "optimizer=adamw",
        "optimizer.lr=0.1",
        "scheduler=onecycle_steps",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "data.datamodule.batch_size=16",
        "logger=csv",
        "callbacks.early_stopping.patience=100",
        "callbacks.lr_monitor.logging_interval=step",
    )
    train(cfg)
    lr = column(metrics_rows(tmp_path), "lr-AdamW")
    assert len(lr) == 24  # one value a step, not one an epoch
    assert lr[0] == pytest.approx(0.1 / 10)  # div_factor
    assert max(lr) == pytest.approx(0.1, rel=1e-3)
    assert lr[-1] < 0.1 / 100  # annealed towards max_lr / (div_factor * final_div_factor) by the last step
    assert lr.index(max(lr)) == pytest.approx(0.25 * 24, abs=1)  # pct_start


def test_metrics_are_logged_once_an_epoch_and_the_loss_every_n_steps(processed, tmp_path):
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=blobs",
        "model=logistic_regression",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=2",
        "data.datamodule.batch_size=16",
        "logger=csv",
        "callbacks.early_stopping.patience=100",
    )
    train(cfg)
    rows = metrics_rows(tmp_path)
    assert len(column(rows, "train/loss")) == 3 and len(column(rows, "val/acc")) == 3
    assert len(column(rows, "train/loss_step")) == 24 // 2
    epoch_loss = column(rows, "train/loss")
    assert all(0 < value < 10 for value in epoch_loss)
    epochs = history(tmp_path / "run" / "history.csv")
    assert [int(row["epoch"]) for row in epochs] == [0, 1, 2]
    assert [float(row["train/loss"]) for row in epochs] == pytest.approx(epoch_loss)


# In a fresh process: how many bytes glibc maps (mmap) for a block of `size`, and whether freeing it gives
# the heap back (trims), with or without tune_allocator() first. mallinfo2 is glibc >= 2.33.
MALLOC_PROBE = """
import ctypes, ctypes.util, json, sys
from pipeline.allocator import tune_allocator
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
tuned = tune_allocator() if sys.argv[1] == "tuned" else None
size = int(sys.argv[2])
before = libc.mallinfo2()
block = libc.malloc(size)
mapped = libc.mallinfo2().hblkhd - before.hblkhd
libc.free(block)
print(json.dumps({"tuned": tuned, "mapped": mapped, "heap_kept": libc.mallinfo2().arena - before.arena}))
"""


def malloc_probe(mode: str, size: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MALLOC_PROBE, mode, str(size)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or platform.libc_ver()[0] != "glibc"
    or tuple(map(int, platform.libc_ver()[1].split(".")[:2])) < (2, 33),
    reason="glibc >= 2.33",
)
def test_tune_allocator_keeps_blocks_below_32_mib_in_the_heap():
    mib = 1 << 20
    assert malloc_probe("default", 16 * mib)["mapped"] >= 16 * mib  # glibc maps a 16 MiB block by default
    tuned = malloc_probe("tuned", 16 * mib)
    assert tuned["tuned"] is True and tuned["mapped"] == 0  # under the 32 MiB mmap threshold: the heap
    assert tuned["heap_kept"] >= 16 * mib  # and freeing it keeps it (trimmed only above 128 MiB free)
    assert malloc_probe("tuned", 48 * mib)["mapped"] >= 48 * mib  # above the threshold: mapped as before
    assert tune_allocator() is True and tune_allocator() is True  # idempotent in one process


def test_on_device_and_memory_map_are_exclusive(processed):
    with pytest.raises(DataConfigError, match=r"memory_map and data.datamodule.on_device are exclusive"):
        ArrayDataModule(str(processed / "mnist"), memory_map=True, on_device=True)


def test_on_device_copies_every_split_once_for_the_loaders(processed):
    datamodule = ArrayDataModule(str(processed / "mnist"), batch_size=8, on_device=True)
    datamodule.setup("fit")
    datamodule._move_to(torch.device("cpu"))
    assert datamodule._on_device == {}  # nothing to copy for the CPU
    target = torch.device("meta")  # any device but the CPU: the copy is what is tested
    datamodule._move_to(target)
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.device == target and y.device == target and x.shape[0] == 8  # batches index the device copy
    assert all(dataset.tensors[0].device.type == "cpu" for dataset in datamodule.splits.values())  # for figures
    copies = {split: dataset.tensors[0] for split, dataset in datamodule._on_device.items()}
    assert set(copies) == {"train", "val", "test"}
    datamodule._move_to(target)  # a second setup (test after fit) copies nothing again
    assert all(datamodule._on_device[split].tensors[0] is t for split, t in copies.items())


def test_on_device_trains_on_the_cpu_as_a_no_op(processed, tmp_path):
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=mnist",
        "model=tiny_cnn",
        "debug=fast_dev_run",
        "data.datamodule.on_device=true",
        "logger=csv",
    )
    assert "test/acc" in train(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_device_trains_on_a_gpu_from_device_memory(processed, tmp_path):
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=mnist",
        "model=tiny_cnn",
        "trainer=gpu",
        "trainer.max_epochs=1",
        "data.datamodule.on_device=true",
        "logger=csv",
    )
    assert "test/acc" in train(cfg)  # figures, checkpoint and test run with the splits copied to the GPU
