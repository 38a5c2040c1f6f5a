"""The sample-weighted mean of per-batch losses: what ``<stage>/loss`` reports.

Why not torchmetrics' ``MeanMetric``: with ``nan_strategy="disable"`` (the only strategy that
keeps a NaN for the NaN guard without a host sync per step) torchmetrics 1.9 drops the
``weight`` argument, so a partial last batch counted as much as a full one. The other
strategies remove NaNs, which would hide a diverged run. This metric keeps both.
"""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import Metric


class WeightedMean(Metric):
    """Σ value·weight / Σ weight over an epoch (summed across processes under DDP); NaN stays NaN."""

    full_state_update = False
    total: torch.Tensor  # states, added in __init__
    weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: int | float) -> None:
        """``value``: a batch's mean (a scalar tensor); ``weight``: how many samples it averaged."""
        self.total += value.detach().to(self.total.dtype) * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight


def log_step_values(module: L.LightningModule, values: dict[str, float], step: int) -> None:
    """Per-step values straight to the module's loggers (``self.log`` costs a millisecond a call; see
    ``pipeline.models.base``), never during the sanity check."""
    if module.trainer.sanity_checking:
        return
    for logger in module.loggers:
        logger.log_metrics(values, step=step)
