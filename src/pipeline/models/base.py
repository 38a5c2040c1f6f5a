"""What every supervised family shares: building the network for the data's shape, optimizers, NaN guard,
and metric logging that costs nothing per step.

Why not ``self.log(...)`` in every step, as Lightning's examples do: each call moves Lightning's
result object to the value's device, which on a CPU costs more than a small network's step
(docs/performance.md). Here a step only updates torchmetrics accumulators (the loss's weighted
mean and the family's metrics); their values are logged once per epoch, and the per-step loss
curve goes straight to the loggers every ``trainer.log_every_n_steps`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection

from pipeline.errors import ModelConfigError, PipelineError
from pipeline.models.metrics import WeightedMean, log_step_values

STAGES = ("train", "val", "test")


class SupervisedModule(L.LightningModule):
    """Builds ``net(input_shape=..., num_outputs=...)`` and checks it on a dummy batch before training.

    A family's ``model_step`` returns the loss and updates ``<stage>_metrics`` (a torchmetrics
    ``MetricCollection`` prefixed ``<stage>/``); this class keeps the loss's mean and logs both
    at the end of each stage's epoch.

    ``optimizer`` and ``scheduler`` are factories (Hydra ``_partial_: true``) so the config,
    not the code, picks them; they are kept out of the saved hyperparameters, so checkpoints
    hold only tensors and plain values and load with ``torch.load(weights_only=True)``.
    """

    # The kind of dataset the family trains on (checked against the data before training)
    # and the family's name (recorded in checkpoints; see pipeline.models.checkpoints).
    task: str = ""
    family: str = ""
    input_dtype: torch.dtype = torch.float32  # of the dummy batch the net is checked on (token ids: long)

    def __init__(
        self,
        net: Callable[..., nn.Module],
        input_shape: Sequence[int],
        num_outputs: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/loss",
        output_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "output_shape"])
        input_shape = tuple(int(d) for d in input_shape)
        self.optimizer_factory = optimizer
        # Sample-weighted mean loss per stage, NaN kept (the guard must see it); torchmetrics
        # states are not saved in checkpoints, so old checkpoints load unchanged.
        self.train_loss, self.val_loss, self.test_loss = (WeightedMean() for _ in STAGES)
        self.scheduler_factory = scheduler
        self.example_input_array = torch.zeros(2, *input_shape, dtype=self.input_dtype)
        expected = tuple(output_shape) if output_shape is not None else (num_outputs,)
        try:  # building or running the net on a dummy batch shows a shape mismatch before training starts
            self.net = net(input_shape=input_shape, num_outputs=num_outputs)
            with torch.no_grad():
                out = self.net(self.example_input_array)
        except PipelineError:  # a builder's own message names its key
            raise
        except (RuntimeError, ValueError) as exc:
            raise ModelConfigError(
                f"the network cannot take the dataset's inputs of shape {list(input_shape)}: {exc}"
            ) from None
        if tuple(out.shape) != (2, *expected):
            raise ModelConfigError(
                f"the network maps inputs of shape {list(input_shape)} to outputs of shape {list(out.shape[1:])}, "
                f"expected {list(expected)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def model_step(self, batch: Any, stage: str) -> torch.Tensor:
        """The loss of one batch; updates ``<stage>_metrics`` with its predictions."""
        raise NotImplementedError

    @property
    def loss_scale(self) -> float:
        """What the logged ``<stage>/loss`` is multiplied by: 1, unless the family trains on a rescaled target."""
        return 1.0

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        loss = self.model_step(batch, stage)
        getattr(self, f"{stage}_loss").update(loss * self.loss_scale, weight=len(batch[1]))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        # log_every_n_steps: set on the Trainer by Lightning's LoggerConnector, not declared by the class
        if self.global_step % self.trainer.log_every_n_steps == 0:  # type: ignore[attr-defined]
            self._log_step_loss(loss)
        # After the epoch's last batch, not in on_train_epoch_end: callbacks' on_train_epoch_end hooks
        # (the epoch history) run before the module's, and must see this epoch's train/* values.
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._log_epoch("train")
        return loss

    def _log_step_loss(self, loss: torch.Tensor) -> None:
        """``train/loss_step`` to every logger (the per-step curve), and the NaN guard, once per logging interval."""
        value = float(loss.detach()) * self.loss_scale
        self._check_finite(value)
        log_step_values(self, {"train/loss_step": value}, step=self.global_step)

    def _check_finite(self, training_loss: float) -> None:
        """The NaN guard: stop a diverged run at once, saying where and what to change."""
        if not math.isfinite(training_loss):
            raise FloatingPointError(
                f"training loss is {training_loss} at step {self.global_step} (epoch {self.current_epoch}); "
                "lower optimizer.lr or check the data for extreme values"
            )

    def _log_epoch(self, stage: str) -> None:
        """``<stage>/loss`` and the family's metrics over the epoch, then a fresh start for the next one."""
        loss: WeightedMean = getattr(self, f"{stage}_loss")
        metrics = self.epoch_metrics(stage)
        values = {f"{stage}/loss": loss.compute(), **metrics.compute()}
        loss.reset()
        metrics.reset()
        if stage == "train":
            self._check_finite(float(values["train/loss"]))
        self.log_dict(values, prog_bar=stage != "train", on_step=False, on_epoch=True)

    def epoch_metrics(self, stage: str) -> MetricCollection:
        """The stage's metric collection with every batch of the epoch so far counted in."""
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        return metrics

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ModelConfigError("this model was rebuilt for inference (optimizer=None) and cannot be trained")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # A schedule whose config leaves total_steps null (conf/scheduler/onecycle_steps.yaml) spans the
        # run's optimizer steps and is stepped after every batch; any other is stepped once per epoch.
        per_step = getattr(self.scheduler_factory, "keywords", {}).get("total_steps", 0) is None
        if per_step:
            total = int(self.trainer.estimated_stepping_batches)
            warmup = float(getattr(self.scheduler_factory, "keywords", {}).get("pct_start", 0.3)) * total
            # A warm-up of one step or less is no schedule (and exactly one step makes OneCycleLR divide by
            # zero); fast_dev_run's single step only checks that everything runs.
            if warmup <= 1 and not getattr(self.trainer, "fast_dev_run", False):
                raise ModelConfigError(
                    f"scheduler: a one-cycle schedule over this run's {total} optimizer step(s) warms up for "
                    f"{warmup:.2f} of them; it needs more steps (more epochs or smaller batches), or scheduler=none"
                )
            scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=total)
        else:
            scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams["scheduler_monitor"],
                "interval": "step" if per_step else "epoch",
            },
        }
