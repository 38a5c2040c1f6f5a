"""``memory_map=True``: the same batches as in memory, from a real map, picklable, and with flat resident memory."""

from __future__ import annotations

import mmap
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.data import mapped
from pipeline.data.datamodule import ArrayDataModule
from pipeline.data.mapped import MappedArrayDataset
from pipeline.data.sampling import EpochBatches
from pipeline.train import train
from tests.conftest import make_cfg

LOADERS = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader"}


@pytest.fixture(params=["map", "read"])
def path(request, monkeypatch) -> str:
    """Both ways a mapped split serves batches: from the map (file within the budget) or read row by row."""
    if request.param == "read":
        monkeypatch.setattr(mapped, "RESIDENT_BYTES", 0)
    return request.param


def batches(datamodule: ArrayDataModule, split: str, epochs: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = getattr(datamodule, LOADERS[split])()
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out += [tuple(batch) for batch in loader]
    return out


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b, strict=False):
        assert xa.dtype == xb.dtype and ya.dtype == yb.dtype
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mnist", {}),
        ("blobs", {}),
        ("mnist", {"classes": [2, 5, 7], "relabel": True}),
    ],
)
def test_mapped_batches_equal_in_memory_batches(processed, path, name, options):
    memory = ArrayDataModule(str(processed / name), batch_size=16, eval_batch_size=7, seed=3, **options)
    mapped_dm = ArrayDataModule(
        str(processed / name), batch_size=16, eval_batch_size=7, seed=3, memory_map=True, **options
    )
    memory.setup()
    mapped_dm.setup()
    for split in LOADERS:
        assert_same(batches(memory, split, epochs=2), batches(mapped_dm, split, epochs=2))
        for a, b in zip(memory.splits[split].tensors, mapped_dm.splits[split].tensors, strict=False):
            assert torch.equal(a, b)
    x, _ = batches(mapped_dm, "train")[0]
    if name == "mnist":
        assert x.dtype == torch.uint8  # scaled and normalised only in on_after_batch_transfer
    assert mapped_dm.splits["train"]._reader is None if path == "map" else mapped_dm.splits["train"]._reader


def test_the_inputs_are_a_read_only_map_not_a_copy(processed):
    datamodule = ArrayDataModule(str(processed / "mnist"), memory_map=True)
    datamodule.setup()
    dataset = datamodule.splits["train"]
    assert isinstance(dataset, MappedArrayDataset)
    assert not dataset.x.flags.owndata and not dataset.x.flags.writeable
    assert isinstance(dataset.x.base, mmap.mmap)
    assert dataset.y.numel() == len(dataset)  # labels are in memory


def test_pickled_dataset_reopens_its_map_and_gives_the_same_batches(processed, path):
    datamodule = ArrayDataModule(str(processed / "mnist"), batch_size=8, memory_map=True, classes=[1, 3])
    datamodule.setup()
    dataset = datamodule.splits["train"]
    copy = pickle.loads(pickle.dumps(dataset))
    assert isinstance(copy.x.base, mmap.mmap) and copy.x.base is not dataset.x.base
    for index in (torch.tensor([4, 0, 2, 2]), torch.arange(len(dataset)), 3):
        for a, b in zip(dataset[index], copy[index], strict=False):
            assert torch.equal(a, b)


def test_workers_serve_the_same_batches(processed):
    memory = ArrayDataModule(str(processed / "mnist"), batch_size=16, seed=1)
    workers = ArrayDataModule(str(processed / "mnist"), batch_size=16, seed=1, memory_map=True, num_workers=1)
    memory.setup()
    workers.setup()
    assert_same(batches(memory, "train"), batches(workers, "train"))


def test_training_runs_with_memory_map(processed, tmp_path):
    cfg = make_cfg(
        processed,
        tmp_path,
        "data=mnist",
        "model=mlp_classifier",
        "debug=fast_dev_run",
        "data.datamodule.memory_map=true",
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_resident_memory_stays_flat_over_an_epoch_of_a_big_file(tmp_path):
    rows, shape = 256_000, (1, 28, 28)  # 200 MB of uint8 images
    path = tmp_path / "train_x.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (rows, *shape)})
        chunk = np.arange(16_000 * 784, dtype=np.uint8).reshape(16_000, *shape)
        for _ in range(rows // len(chunk)):
            f.write(chunk.tobytes())
    size_mib = path.stat().st_size / 2**20
    dataset = MappedArrayDataset(path, torch.zeros(rows, dtype=torch.int64))
    loader = DataLoader(dataset, sampler=EpochBatches(rows, 512, shuffle=True), batch_size=None)
    before = peak = resident_mib()
    seen = 0
    for x, _ in loader:
        seen += len(x)
        peak = max(peak, resident_mib())
    assert seen == rows and x.shape == (len(x), *shape)
    assert peak - before < size_mib / 8, f"resident memory grew {peak - before:.0f} MiB over a {size_mib:.0f} MiB file"
