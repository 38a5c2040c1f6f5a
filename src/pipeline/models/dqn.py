"""Deep Q-learning (Mnih et al. 2015) in Lightning's loop: the reinforcement-learning lesson.

The network maps an observation to one value per action: the return expected from taking that
action and acting well afterwards. Each training step plays one environment step (a random
action with probability epsilon, which decays linearly, else the best-valued one) into the
replay buffer, then fits the network on a random batch of past transitions to the target
``reward + gamma * value of the next observation`` (0 after a terminal step).

That target is computed by a second copy of the network, the **target network**, which is
synchronised with the trained one only every ``target_sync_steps`` steps. Were the target
computed by the network being trained, every update would move its own target, and the values
chase themselves into oscillation or divergence. ``double: true`` (Double DQN) picks the next
action with the trained network and values it with the target one, which curbs the
overestimation a max over noisy values has.

Metrics: ``episode/reward`` and ``episode/reward_avg100`` per training episode (step = the
episode's number), ``train/loss``, ``train/epsilon``, ``train/reward_avg100`` and
``train/episodes`` per epoch, and ``val|test/mean_reward`` (also ``min_reward``, ``std_reward``)
over the greedy episodes of the datamodule's fixed seeds.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.data.environment import play_episode
from pipeline.errors import ModelConfigError
from pipeline.models.base import SupervisedModule
from pipeline.models.metrics import log_step_values

LOSSES = {"huber": nn.SmoothL1Loss, "mse": nn.MSELoss}
MOVING_AVERAGE = 100  # episodes: CartPole's "solved" is an average over 100 episodes


class DQNModule(SupervisedModule):
    """A DQN agent for an ``EnvironmentDataModule`` (``pipeline.data.env_datamodule``): its training batches
    are replay-buffer samples, its validation and test batches episode seeds."""

    task = "control"
    family = "dqn"

    def __init__(
        self,
        num_actions: int,
        gamma: float = 0.99,
        double: bool = True,
        loss: str = "huber",
        target_sync_steps: int = 500,
        target_tau: float = 1.0,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        epsilon_decay_steps: int = 10_000,
        **kwargs: Any,
    ) -> None:
        _check_agent(gamma, loss, target_sync_steps, target_tau, epsilon_start, epsilon_end, epsilon_decay_steps)
        super().__init__(num_outputs=num_actions, **kwargs)
        self.target_net = copy.deepcopy(self.net).requires_grad_(False)
        self.loss_fn = LOSSES[loss]()
        self.episode_rewards: list[float] = []  # every finished training episode's return, in order
        self._eval_rewards: list[float] = []

    # --- acting -----------------------------------------------------------------------------------------

    def epsilon(self) -> float:
        """The exploration rate now: linear from ``epsilon_start`` to ``epsilon_end`` over the decay steps."""
        hp = self.hparams
        progress = min(1.0, self.global_step / hp["epsilon_decay_steps"])
        return float(hp["epsilon_start"] + (hp["epsilon_end"] - hp["epsilon_start"]) * progress)

    def greedy(self, observation: np.ndarray) -> int:
        """The best-valued action for one observation."""
        with torch.no_grad():
            values = self.net(torch.as_tensor(observation, dtype=torch.float32, device=self.device).unsqueeze(0))
        return int(values.argmax())

    # --- learning ---------------------------------------------------------------------------------------

    def model_step(self, batch: Any, stage: str) -> torch.Tensor:
        """The temporal-difference loss of a batch of transitions."""
        observations, actions, rewards, terminated, next_observations = batch
        values = self.net(observations).gather(1, actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            if self.hparams["double"]:
                best = self.net(next_observations).argmax(dim=1, keepdim=True)
                next_values = self.target_net(next_observations).gather(1, best).squeeze(1)
            else:
                next_values = self.target_net(next_observations).max(dim=1).values
            targets = rewards + self.hparams["gamma"] * (1.0 - terminated) * next_values
        return self.loss_fn(values, targets)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        finished = self.trainer.datamodule.experience.step(self.greedy, self.epsilon())  # type: ignore[attr-defined]
        if finished is not None:
            self._record_episode(finished)
        loss = super().training_step(batch, batch_idx)
        value = float(loss.detach())
        if not math.isfinite(value):  # every step: a diverged agent stops at the step it diverged
            raise FloatingPointError(
                f"DQN loss is {value} at step {self.global_step} (epoch {self.current_epoch}); lower optimizer.lr, "
                "set trainer.gradient_clip_val, or keep model.loss=huber"
            )
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the optimizer step: the target network follows every ``target_sync_steps`` updates."""
        if self.global_step % self.hparams["target_sync_steps"] == 0:
            self._sync_target()

    def on_fit_start(self) -> None:
        """One environment step per optimizer step, in one process: what the schedules and syncs count on."""
        if self.trainer.accumulate_grad_batches > 1 or self.trainer.world_size > 1:
            raise ModelConfigError(
                f"a DQN plays one environment step per update in one process: trainer.accumulate_grad_batches="
                f"{self.trainer.accumulate_grad_batches} and {self.trainer.world_size} processes are not supported "
                "(set trainer.accumulate_grad_batches=1 trainer.devices=1)"
            )

    def _sync_target(self) -> None:
        """target ← tau·online + (1 − tau)·target (tau = 1: a copy)."""
        tau = float(self.hparams["target_tau"])
        with torch.no_grad():
            for target, online in zip(self.target_net.parameters(), self.net.parameters(), strict=True):
                target.lerp_(online, tau)

    def _record_episode(self, reward: float) -> None:
        self.episode_rewards.append(reward)
        values = {"episode/reward": reward, f"episode/reward_avg{MOVING_AVERAGE}": self._moving_average()}
        log_step_values(self, values, step=len(self.episode_rewards))

    def _moving_average(self) -> float:
        """The mean return of the last ``MOVING_AVERAGE`` training episodes (of all of them, before there are as
        many)."""
        recent = self.episode_rewards[-MOVING_AVERAGE:]
        return sum(recent) / len(recent)

    def _log_epoch(self, stage: str) -> None:
        """Per epoch: the mean TD loss, epsilon, the training episodes so far and their moving average."""
        if stage != "train":
            return
        values = {"train/loss": float(self.train_loss.compute()), "train/epsilon": self.epsilon()}
        self.train_loss.reset()
        self._check_finite(values["train/loss"])
        values["train/episodes"] = float(len(self.episode_rewards))
        if self.episode_rewards:
            values[f"train/reward_avg{MOVING_AVERAGE}"] = self._moving_average()
        self.log_dict(values, on_step=False, on_epoch=True)

    # --- greedy episodes: validation and test -----------------------------------------------------------

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._play_greedy(batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._play_greedy(batch)

    def _play_greedy(self, seed: int | torch.Tensor) -> None:
        env = self.trainer.datamodule.eval_env  # type: ignore[attr-defined]
        self._eval_rewards.append(play_episode(env, self.greedy, int(seed))[0])

    def on_validation_epoch_end(self) -> None:
        self._log_rewards("val")

    def on_test_epoch_end(self) -> None:
        self._log_rewards("test")

    def _log_rewards(self, stage: str) -> None:
        rewards, self._eval_rewards = np.asarray(self._eval_rewards), []
        if rewards.size:
            values = {"mean_reward": rewards.mean(), "min_reward": rewards.min(), "std_reward": rewards.std()}
            self.log_dict({f"{stage}/{k}": float(v) for k, v in values.items()}, prog_bar=True)

    # --- checkpoints: the episode history resumes with the weights ------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["episode_rewards"] = list(self.episode_rewards)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed fit continues the history; testing the best checkpoint keeps the whole run's."""
        if self._trainer is None or self.trainer.state.fn == "fit":
            self.episode_rewards = [float(r) for r in checkpoint.get("episode_rewards", [])]


def _check_agent(gamma: float, loss: str, sync: int, tau: float, eps_start: float, eps_end: float, decay: int) -> None:
    """The agent's settings, refused before anything is built, naming the key."""
    problems = [
        (not 0 < gamma <= 1, f"model.gamma={gamma}: expected a discount in (0, 1]"),
        (loss not in LOSSES, f"model.loss={loss!r}: expected one of {', '.join(LOSSES)}"),
        (sync < 1, f"model.target_sync_steps={sync}: expected at least 1"),
        (not 0 < tau <= 1, f"model.target_tau={tau}: expected a value in (0, 1] (1: copy the network)"),
        (
            not 0 <= eps_end <= eps_start <= 1,
            f"model.epsilon_start={eps_start}, model.epsilon_end={eps_end}: expected 0 <= end <= start <= 1",
        ),
        (decay < 1, f"model.epsilon_decay_steps={decay}: expected at least 1"),
    ]
    for wrong, message in problems:
        if wrong:
            raise ModelConfigError(message)
