"""Regression on tables: linear, polynomial features or an MLP, with MSE, MAE or Huber loss.

With a standardised target (``preprocess.scale_target``, ``target_scale=(mean, std)``) the network
learns ``(y - mean) / std`` and the loss is taken on that scale; the module's output, every
metric and the logged model's predictions are in the target's own units. So is the logged
``<stage>/loss``: the same loss on unscaled errors, which is the optimised one times ``std²``
(MSE; Huber with its ``delta`` times ``std``) or ``std`` (MAE).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from pipeline.data.spec import DatasetSpec
from pipeline.errors import ModelConfigError
from pipeline.models.base import SupervisedModule

LOSSES = {"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}


class RegressionModule(SupervisedModule):
    task = "regression"
    family = "regression"

    def __init__(self, loss: str = "mse", target_scale: tuple[float, float] = (0.0, 1.0), **kwargs: Any) -> None:
        if loss not in LOSSES:
            raise ModelConfigError(f"model.loss={loss!r} is not one of {', '.join(LOSSES)}")
        super().__init__(num_outputs=1, **kwargs)
        self.target_mean, self.target_std = (float(v) for v in target_scale)
        self.loss_fn = LOSSES[loss]()
        self._loss_scale = self.target_std if loss == "mae" else self.target_std**2
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()})
        # One collection per stage, so train, val and test accumulate separately.
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @property
    def loss_scale(self) -> float:
        return self._loss_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in the target's units."""
        return self.net(x) * self.target_std + self.target_mean

    def model_step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        scaled = self.net(x).squeeze(1)
        loss = self.loss_fn(scaled, (y - self.target_mean) / self.target_std)
        pred = scaled.detach() * self.target_std + self.target_mean
        getattr(self, f"{stage}_metrics").update(pred, y)
        return loss

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        # float64 tensors: Lightning keeps their precision (a float would become a float32 tensor)
        self.log_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in self.fitted_line().items()})

    def fitted_line(self) -> dict[str, float]:
        """``fit/w`` and ``fit/b`` of a purely affine net in the data's raw units (a student compares them with
        the line the data was drawn from); nothing for other nets or without the datamodule's scaling."""
        spec = getattr(getattr(self.trainer, "datamodule", None), "spec", None)
        if spec is None:
            return {}
        return fitted_affine(self.net, spec) or {}


def fitted_affine(net: nn.Module, spec: DatasetSpec) -> dict[str, float] | None:
    """``w`` and ``b`` of a purely affine regression net, in the data's raw units; None for other nets.

    Training sees standardised features ``(x - mean) / std`` (when ``spec.normalize``); a layer
    ``w'·x_std + b'`` is ``(w'/std)·x + (b' - Σ w'·mean/std)`` on raw inputs, which is what a
    student compares with the line the data was drawn from. A standardised target multiplies
    both by its std and adds its mean to ``b``.
    """
    layers = [m for m in net.modules() if len(list(m.children())) == 0 and not isinstance(m, nn.Flatten)]
    if len(layers) != 1 or not isinstance(layers[0], nn.Linear) or layers[0].out_features != 1:
        return None
    weight = layers[0].weight.detach().double()[0]
    bias = float(layers[0].bias.detach().double()[0]) if layers[0].bias is not None else 0.0
    if spec.normalize:
        mean = torch.tensor(spec.mean, dtype=torch.float64).flatten()
        std = torch.tensor(spec.std, dtype=torch.float64).flatten()
        bias -= float((weight * mean / std).sum())
        weight = weight / std
    target_mean, target_std = spec.target_scale
    weight, bias = weight * target_std, bias * target_std + target_mean
    if weight.numel() == 1:
        return {"fit/w": float(weight[0]), "fit/b": bias}
    return {**{f"fit/w_{i}": float(w) for i, w in enumerate(weight)}, "fit/b": bias}
