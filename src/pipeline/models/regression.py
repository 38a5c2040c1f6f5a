"""Regression on tables: linear, polynomial features or an MLP, with MSE, MAE or Huber loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from pipeline.models.base import ModelConfigError, SupervisedModule

LOSSES = {"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}


class RegressionModule(SupervisedModule):
    task = "regression"
    family = "regression"

    def __init__(self, loss: str = "mse", **kwargs: Any) -> None:
        if loss not in LOSSES:
            raise ModelConfigError(f"model.loss={loss!r} is not one of {', '.join(LOSSES)}")
        super().__init__(num_outputs=1, **kwargs)
        self.loss_fn = LOSSES[loss]()
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})
        # One collection per stage, so train, val and test accumulate separately.
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def model_step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        pred = self(x).squeeze(1)
        loss = self.loss_fn(pred, y)
        getattr(self, f"{stage}_metrics").update(pred.detach(), y)
        return loss
