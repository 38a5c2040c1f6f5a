"""Whole batches of indices, in an order that depends only on (seed, epoch).

A ``RandomSampler`` with a seeded generator gives a repeatable run, but its order for
epoch *k* depends on how many epochs the same process drew before: a run resumed from
``last.ckpt`` would see epoch 0's order again. Here the permutation of epoch *k* is drawn
from ``seed + k``; Lightning calls ``set_epoch`` before every epoch (resumed ones too), so
a resumed run sees exactly the batches of the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochBatches(Sampler[torch.Tensor]):
    """Yields index tensors of ``batch_size`` (the last may be shorter), shuffled per epoch or in order."""

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        # Without set_epoch calls (e.g. under a distributed wrapper) the next pass is the next epoch.
        self.epoch += 1
        yield from order.split(self.batch_size)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)
