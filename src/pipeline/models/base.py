"""What every supervised family shares: building the network for the data's shape, optimizers, NaN guard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from pipeline.errors import PipelineError


class ModelConfigError(PipelineError, ValueError):
    """The model config does not fit the data (shapes, classes) or the checkpoint."""


class SupervisedModule(L.LightningModule):
    """Builds ``net(input_shape=..., num_outputs=...)`` and checks it on a dummy batch before training.

    ``optimizer`` and ``scheduler`` are factories (Hydra ``_partial_: true``) so the config,
    not the code, picks them; they are kept out of the saved hyperparameters, so checkpoints
    hold only tensors and plain values and load with ``torch.load(weights_only=True)``.
    """

    # The kind of dataset the family trains on (checked against the data before training)
    # and the family's name (recorded in checkpoints; see pipeline.checkpoints).
    task: str = ""
    family: str = ""

    def __init__(self, net: Callable[..., nn.Module], input_shape: Sequence[int], num_outputs: int,
                 optimizer: Callable[..., torch.optim.Optimizer] | None,
                 scheduler: Callable[..., Any] | None = None, scheduler_monitor: str = "val/loss",
                 expected_input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        input_shape = tuple(int(d) for d in input_shape)
        if expected_input_shape is not None and tuple(expected_input_shape) != input_shape:
            raise ModelConfigError(
                f"model.expected_input_shape={list(expected_input_shape)} does not match the dataset's input shape "
                f"{list(input_shape)}")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.example_input_array = torch.zeros(2, *input_shape)
        try:  # building or running the net on a dummy batch shows a shape mismatch before training starts
            self.net = net(input_shape=input_shape, num_outputs=num_outputs)
            with torch.no_grad():
                out = self.net(self.example_input_array)
        except (RuntimeError, ValueError) as exc:
            raise ModelConfigError(
                f"the network cannot take the dataset's inputs of shape {list(input_shape)}: {exc}") from None
        if tuple(out.shape) != (2, num_outputs):
            raise ModelConfigError(
                f"the network maps inputs of shape {list(input_shape)} to outputs of shape {list(out.shape[1:])}, "
                f"expected [{num_outputs}]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def model_step(self, batch: Any, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.model_step(batch, "train")
        # The per-step curve (written every trainer.log_every_n_steps); train/loss is the epoch mean.
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, batch_size=len(batch[1]))
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "lower optimizer.lr or check the data for extreme values")
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.model_step(batch, "test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ModelConfigError("this model was rebuilt for inference (optimizer=None) and cannot be trained")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor, "interval": "epoch"}}
