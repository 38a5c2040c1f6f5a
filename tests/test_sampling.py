"""Batch order depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

import torch

from pipeline.data.sampling import EpochBatches


def epoch_order(sampler: EpochBatches, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return torch.cat(list(sampler)).tolist()


def test_each_epoch_is_a_permutation_in_batches_of_the_given_size():
    sampler = EpochBatches(10, batch_size=4, shuffle=True, seed=3)
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4, 2] and len(sampler) == 3
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_order_depends_on_seed_and_epoch_only():
    a, b = EpochBatches(50, 8, shuffle=True, seed=1), EpochBatches(50, 8, shuffle=True, seed=1)
    for _ in range(3):  # earlier passes of `a` do not change what epoch 2 looks like
        list(a)
    assert epoch_order(a, 2) == epoch_order(b, 2)
    assert epoch_order(a, 2) != epoch_order(a, 3)
    assert epoch_order(a, 2) != epoch_order(EpochBatches(50, 8, shuffle=True, seed=2), 2)


def test_without_set_epoch_each_pass_is_the_next_epoch():
    sampler = EpochBatches(50, 8, shuffle=True, seed=1)
    first, second = torch.cat(list(sampler)).tolist(), torch.cat(list(sampler)).tolist()
    assert first == epoch_order(EpochBatches(50, 8, shuffle=True, seed=1), 0)
    assert second == epoch_order(EpochBatches(50, 8, shuffle=True, seed=1), 1)


def test_evaluation_order_is_the_stored_order():
    assert torch.cat(list(EpochBatches(7, 3, shuffle=False))).tolist() == list(range(7))
