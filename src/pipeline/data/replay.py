"""A DQN's experience: the transitions it played, kept in a replay buffer and sampled in random batches.

Sampling old transitions at random breaks the correlation between consecutive steps that
makes learning from the stream itself unstable (Mnih et al. 2015). The buffer is five
preallocated NumPy arrays used as a ring: a push is five row writes, a batch one fancy index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class ReplayBuffer:
    """The last ``capacity`` transitions (observation, action, reward, terminated, next observation)."""

    def __init__(self, capacity: int, observation_size: int) -> None:
        if capacity < 1:
            raise ValueError(f"a replay buffer holds at least one transition, not {capacity}")
        self.capacity, self.size, self.next = capacity, 0, 0
        self.observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.next_observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        # terminated, not truncated: a time limit ends the episode but not the value of the state it reached
        self.terminated = np.zeros(capacity, dtype=np.float32)

    def __len__(self) -> int:
        return self.size

    def push(
        self, observation: np.ndarray, action: int, reward: float, terminated: bool, next_observation: np.ndarray
    ) -> None:
        i = self.next
        self.observations[i], self.actions[i], self.rewards[i] = observation, action, reward
        self.terminated[i], self.next_observations[i] = float(terminated), next_observation
        self.next, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """``batch_size`` transitions drawn uniformly (with replacement) as tensors."""
        rows = rng.integers(0, self.size, size=batch_size)
        arrays = (self.observations, self.actions, self.rewards, self.terminated, self.next_observations)
        return tuple(torch.from_numpy(a[rows]) for a in arrays)


@dataclass
class Experience:
    """The training environment played one step at a time, epsilon-greedily, into a replay buffer."""

    env: Any
    buffer: ReplayBuffer
    seed: int  # the environment's first episode and its random actions
    explore_seed: int  # the coin flips between exploring and exploiting

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.explore_seed)
        self.env.action_space.seed(self.seed)
        self.observation, _ = self.env.reset(seed=self.seed)
        self.episode_return = 0.0

    def step(self, greedy: Callable[[np.ndarray], int], epsilon: float) -> float | None:
        """One step: a random action with probability ``epsilon``, else ``greedy(observation)``; returns the
        episode's return when this step ended it, else None."""
        explore = self.rng.random() < epsilon
        action = int(self.env.action_space.sample()) if explore else greedy(self.observation)
        next_observation, reward, terminated, truncated, _ = self.env.step(action)
        self.buffer.push(self.observation, action, float(reward), terminated, next_observation)
        self.episode_return += float(reward)
        if not (terminated or truncated):
            self.observation = next_observation
            return None
        finished, self.episode_return = self.episode_return, 0.0
        self.observation, _ = self.env.reset()
        return finished

    def warm_up(self, steps: int) -> None:
        """Fill the buffer with ``steps`` random steps before learning starts (their episodes are not counted)."""
        for _ in range(steps):
            self.step(lambda _: 0, epsilon=1.0)
        self.episode_return = 0.0
        self.observation, _ = self.env.reset()
