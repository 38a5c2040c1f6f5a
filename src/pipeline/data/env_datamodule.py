"""Reinforcement learning inside Lightning's loop: the environment as a datamodule.

A "training batch" is a random batch of the replay buffer; the agent plays one environment step
per batch in its ``training_step`` (``pipeline.models.dqn``), so an epoch is ``steps_per_epoch``
steps of play and learning. Validation and test batches are episode seeds: each
``validation_step``/``test_step`` plays one greedy episode from its seed, so the reported
``val/mean_reward`` and ``test/mean_reward`` are over the same fixed episodes every time
(the structure of Lightning's own DQN example, with the environment in the data config).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from pipeline.data.environment import environment_spec, make_environment
from pipeline.data.replay import Experience, ReplayBuffer
from pipeline.errors import DataConfigError

# The greedy episodes' seeds, the same for every run: apart from each other and from training's (`seed`)
VAL_SEED_OFFSET = 500_000
TEST_SEED_OFFSET = 1_000_000
# Lightning warns that a sized IterableDataset may mislead worker processes: the batches are drawn in this one
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")


class ReplayBatches(IterableDataset):
    """``steps`` random batches of the buffer per epoch, drawn as the loop asks for them (one batch ahead of the
    step that uses it: Lightning prefetches one), so each reflects the buffer as it grows."""

    def __init__(self, buffer: ReplayBuffer, batch_size: int, steps: int, seed: int) -> None:
        self.buffer, self.batch_size, self.steps = buffer, batch_size, steps
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for _ in range(self.steps):
            yield self.buffer.sample(self.batch_size, self.rng)

    def __len__(self) -> int:
        return self.steps


class EpisodeSeeds(Dataset):
    """The seeds of the greedy episodes one validation or test plays, one per batch."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = list(seeds)

    def __getitem__(self, index: int) -> int:
        return self.seeds[index]

    def __len__(self) -> int:
        return len(self.seeds)


class EnvironmentDataModule(L.LightningDataModule):
    """A gymnasium environment (``env``, e.g. ``CartPole-v1``: the id carries the environment's version), its
    replay buffer, and the seeds of the greedy evaluation episodes.

    ``seed`` seeds the training environment, its random actions and the batches. Validation episodes
    start from seeds ``500_000 ... 500_000 + val_episodes - 1`` and test episodes from ``1_000_000 ...``:
    the same episodes for every run and every seed, so runs of a sweep are compared on equal terms.
    ``name`` is the data config's (``cartpole``), as for every dataset.
    """

    def __init__(
        self,
        env: str,
        name: str | None = None,
        seed: int = 0,
        max_episode_steps: int | None = None,
        batch_size: int = 64,
        buffer_size: int = 50_000,
        warm_up_steps: int = 1000,
        steps_per_epoch: int = 1000,
        val_episodes: int = 10,
        test_episodes: int = 100,
        observation_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        counts = {"batch_size": batch_size, "buffer_size": buffer_size, "steps_per_epoch": steps_per_epoch}
        counts |= {"val_episodes": val_episodes, "test_episodes": test_episodes}
        if max_episode_steps is not None:  # null: the environment's own limit
            counts["max_episode_steps"] = max_episode_steps
        _check_settings(counts)
        if warm_up_steps < batch_size:
            raise DataConfigError(
                f"data.datamodule.warm_up_steps={warm_up_steps}: learning starts from a buffer of random steps, at "
                f"least one batch (batch_size={batch_size})"
            )
        self.env_id, self.seed, self.batch_size = env, seed, batch_size
        self.env = make_environment(env, max_episode_steps)  # an unknown id or unsuitable spaces fail here
        self.eval_env = make_environment(env, max_episode_steps)  # greedy episodes, apart from training's
        self.spec = environment_spec(self.env, name or env, observation_names)
        self.meta: dict[str, Any] = {
            "name": self.spec.name,
            "kind": "environment",
            "env": env,
            "versions": {"gymnasium": _gymnasium()},
        }
        self.processed_dir = None  # no files: nothing for MLflow's dataset inputs
        # independent streams for the exploration and the batches, both from `seed`
        explore_seed, batch_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
        self.buffer = ReplayBuffer(buffer_size, self.spec.input_shape[0])
        self.experience = Experience(self.env, self.buffer, seed, explore_seed)
        self.batch_seed = batch_seed
        self.warm_up_steps, self.steps_per_epoch = warm_up_steps, steps_per_epoch
        self.val_seeds = [VAL_SEED_OFFSET + i for i in range(val_episodes)]
        self.test_seeds = [TEST_SEED_OFFSET + i for i in range(test_episodes)]

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and len(self.buffer) < self.warm_up_steps:
            self.experience.warm_up(self.warm_up_steps - len(self.buffer))

    def train_dataloader(self) -> DataLoader:
        batches = ReplayBatches(self.buffer, self.batch_size, self.steps_per_epoch, self.batch_seed)
        return DataLoader(batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(EpisodeSeeds(self.val_seeds), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(EpisodeSeeds(self.test_seeds), batch_size=None)

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self.env.close()


def _check_settings(counts: dict[str, int]) -> None:
    """Each setting a count of at least one, or a user error naming it."""
    for key, value in counts.items():
        if value < 1:
            raise DataConfigError(f"data.datamodule.{key}={value}: expected at least 1")


def _gymnasium() -> str:
    import gymnasium

    return str(gymnasium.__version__)
