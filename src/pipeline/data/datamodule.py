"""Serve a preprocessed dataset from memory: whole-batch tensor indexing, no per-sample Python work.

The arrays are read once in ``setup``; a batch is one fancy-indexing of the stored
tensors (``x[indices]``), and images stay uint8 until they reach the training device,
where ``on_after_batch_transfer`` makes the whole batch model inputs at once with the dataset's
``ModelInput`` (``pipeline.data.spec``), augmenting training batches between scaling and
normalising when configured (``pipeline.data.augment``).
With ``memory_map=True`` the inputs stay on disk instead (``pipeline.data.mapped``): the same
batches, with resident memory that does not grow with the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from pipeline.data.augment import RandomAffine
from pipeline.data.mapped import MappedArrayDataset
from pipeline.data.processed import SPLITS, load_split, read_meta
from pipeline.data.sampling import EpochBatches
from pipeline.data.spec import DatasetSpec, ModelInput
from pipeline.errors import DataConfigError


class DeviceTensorDataset(TensorDataset):
    """A ``TensorDataset`` in accelerator memory, indexed by the sampler's host index tensors.

    Indexing a GPU tensor with a host index copies the index first and waits for the GPU to
    finish its queued work: one stall per batch. The index goes over without that wait instead.
    """

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, ...]:
        if isinstance(index, torch.Tensor):
            index = index.to(self.tensors[0].device, non_blocking=True)
        return tuple(tensor[index] for tensor in self.tensors)


class ArrayDataModule(L.LightningDataModule):
    """Batches of a ``datasets/processed/<name>`` folder.

    ``classes`` keeps only those class indices (e.g. ``[8]`` for a one-digit GAN, or
    ``[0, 1, 2, 3, 4]`` for the first half of a transfer-learning lesson); with
    ``relabel=True`` they are renumbered 0..k-1 so a k-way head can learn them.
    ``augment`` (image datasets only), e.g. ``{rotation_degrees: 10, shift_fraction: 0.1}``,
    randomly rotates and shifts every training batch, each image its own way; validation
    and test batches are never augmented.
    ``memory_map=True`` maps each split's inputs from its ``.npy`` instead of reading them (labels
    are read: they are small), so a training split larger than memory trains with a bounded
    resident set; batches and their order are the same as in memory. Off by default: a split's
    file above 64 MiB is then read row by row, ~1 ms per batch of 512 MNIST rows on top of the
    in-memory gather (see ``pipeline.data.mapped``).
    """

    def __init__(
        self,
        processed_dir: str,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        normalize: bool = True,
        classes: Sequence[int] | None = None,
        relabel: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        augment: Mapping[str, float] | None = None,
        memory_map: bool = False,
        on_device: bool = False,
    ) -> None:
        super().__init__()
        self.processed_dir = Path(processed_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.classes = list(classes) if classes is not None else None
        self.relabel = relabel
        self.num_workers = num_workers
        self.seed = seed
        self.memory_map = memory_map
        if memory_map and on_device:
            raise DataConfigError(
                "data.datamodule.memory_map and data.datamodule.on_device are exclusive: "
                "a mapped file cannot live in device memory; set one of them to false"
            )
        self.on_device = on_device
        self.meta: dict[str, Any] = read_meta(self.processed_dir)
        unknown = sorted(set(self.classes or []) - set(range(len(self.meta.get("class_names", [])))))
        if unknown:
            raise DataConfigError(f"data.datamodule.classes: {unknown} are not class indices of {self.meta['name']}")
        # What the model needs to know about the data, from meta.json before any array is loaded.
        self.spec = DatasetSpec.from_meta(self.meta, normalize, self.classes, relabel)
        self.model_input = ModelInput(self.spec)
        self.splits: dict[str, TensorDataset | MappedArrayDataset] = {}
        self._on_device: dict[str, DeviceTensorDataset] = {}  # copies of the splits in accelerator memory (on_device)
        self.augment = self._build_augment(augment)

    def _build_augment(self, augment: Mapping[str, float] | None) -> RandomAffine | None:
        if not augment:
            return None
        if len(self.spec.input_shape) != 3:
            raise DataConfigError(
                f"data.datamodule.augment is for image datasets; {self.meta['name']} has inputs of "
                f"shape {list(self.spec.input_shape)}: set it to null"
            )
        try:
            return RandomAffine(**augment)
        except (TypeError, ValueError) as exc:
            raise DataConfigError(f"data.datamodule.augment={dict(augment)}: {exc}") from None

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.splits:
                self.splits[split] = self._dataset(split)
        if self.on_device and self.trainer is not None:
            self._move_to(self.trainer.strategy.root_device)

    def _move_to(self, device: torch.device) -> None:
        """Copy every split to ``device``'s memory once, for the dataloaders: a batch is then an index into
        it, with no copy per step (worth it on a GPU, where MNIST's 47 MB of uint8 is nothing; nothing
        is copied for the CPU). ``splits`` stay in host memory for everything else (figures, the logged
        model's input example, evaluation)."""
        if device.type == "cpu":
            return
        for split, dataset in self.splits.items():  # in memory: memory_map and on_device are exclusive
            resident = self._on_device.get(split)
            if resident is None or resident.tensors[0].device != device:
                self._on_device[split] = DeviceTensorDataset(*(t.to(device) for t in dataset.tensors))

    def _dataset(self, split: str) -> TensorDataset | MappedArrayDataset:
        x: np.ndarray | None
        x, y = load_split(self.processed_dir, split, mmap=self.memory_map)
        if self.memory_map:  # only the labels are read; the inputs stay in the file until batches gather them
            x, y = None, np.array(y)
        rows = None
        if self.classes is not None:
            keep = np.isin(y, self.classes)
            rows, y = np.flatnonzero(keep), y[keep]
            x = x[keep] if x is not None else None
            if self.relabel:
                y = np.searchsorted(np.array(sorted(self.classes)), y)
        labels = torch.from_numpy(np.ascontiguousarray(y))
        if x is None:
            return MappedArrayDataset(self.processed_dir / f"{split}_x.npy", labels, rows)
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), labels)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self._on_device.get(split, self.splits[split])
        batches = EpochBatches(
            len(dataset), self.batch_size if shuffle else self.eval_batch_size, shuffle=shuffle, seed=self.seed
        )
        # batch_size=None: the dataset is indexed with a whole tensor of indices at once.
        return DataLoader(
            dataset,
            sampler=batches,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, list | tuple):  # e.g. the model summary's example input: already a float batch
            return batch
        x, y = batch
        x = self.model_input.scale(x)
        # Before normalising, so the uncovered corners are filled with the background value 0.
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            x = self.augment(x)
        return self.model_input.normalize(x), y
