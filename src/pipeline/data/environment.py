"""Reinforcement learning's data source: a gymnasium environment, checked before any step, and greedy episodes.

An agent of this pipeline (``pipeline.models.dqn``) sees a flat observation vector and picks one
of a finite set of actions, so an environment is refused at once, naming what it has instead,
when its id is unknown, its actions are continuous, or its observations are not a vector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.data.spec import DatasetSpec
from pipeline.errors import DataConfigError

# Discrete actions, vector observations: what a DQN takes
SUITABLE = "CartPole-v1, Acrobot-v1, MountainCar-v0 or LunarLander-v3 (Box2D)"


def make_environment(env_id: str, max_episode_steps: int | None = None) -> Any:
    """``gymnasium.make(env_id)``, with a user error for an unknown id and for spaces a DQN cannot handle."""
    import gymnasium as gym

    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps)
    except gym.error.Error as error:  # NameNotFound, VersionNotFound, ...: gymnasium's message suggests names
        raise DataConfigError(f"data.datamodule.env={env_id!r}: {error} (gymnasium {gym.__version__})") from None
    except ImportError as error:  # an environment whose extra is not installed (box2d, mujoco)
        raise DataConfigError(f"data.datamodule.env={env_id!r} needs a package not installed: {error}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise DataConfigError(
            f"data.datamodule.env={env_id!r} has a continuous or structured action space, {env.action_space}; a DQN "
            f"picks one of a finite set of actions (a Discrete space): use an environment such as {SUITABLE}"
        )
    shape = env.observation_space.shape
    if not isinstance(env.observation_space, gym.spaces.Box) or shape is None or len(shape) != 1:
        env.close()
        raise DataConfigError(
            f"data.datamodule.env={env_id!r} observes {env.observation_space}; this DQN takes a vector of numbers "
            f"(a 1-D Box space), as {SUITABLE} give"
        )
    return env


def environment_spec(env: Any, env_id: str, observation_names: Sequence[str] | None = None) -> DatasetSpec:
    """The environment as a model sees it: ``input_shape`` is the observation's, one "class" per action;
    observations go in unscaled (``normalize=False``)."""
    size = int(env.observation_space.shape[0])
    names = tuple(observation_names or (f"obs_{i}" for i in range(size)))
    if len(names) != size:
        raise DataConfigError(
            f"data.datamodule.observation_names has {len(names)} names; {env_id} observes {size} numbers"
        )
    return DatasetSpec(
        name=env_id,
        task="control",
        input_shape=(size,),
        class_names=tuple(str(a) for a in range(int(env.action_space.n))),
        mean=(0.0,) * size,
        std=(1.0,) * size,
        normalize=False,
        feature_names=names,
    )


def play_episode(env: Any, act: Callable[[np.ndarray], int], seed: int) -> tuple[float, int]:
    """(return, steps) of one episode from ``env.reset(seed=seed)``, each action ``act(observation)``."""
    observation, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(act(observation))
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
    return total, steps
