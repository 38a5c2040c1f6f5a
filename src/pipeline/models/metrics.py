"""What the recorded metrics are made of: the sample-weighted mean of per-batch losses (what
``<stage>/loss`` reports), batched metric updates, and per-step values sent to the loggers.

Why not torchmetrics' ``MeanMetric``: with ``nan_strategy="disable"`` (the only strategy that
keeps a NaN for the NaN guard without a host sync per step) torchmetrics 1.9 drops the
``weight`` argument, so a partial last batch counted as much as a full one. The other
strategies remove NaNs, which would hide a diverged run. This metric keeps both.
"""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import Metric, MetricCollection


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


class PendingUpdates:
    """A metric collection's per-batch updates, applied ``every`` batches at a time, their arguments concatenated.

    Why: a torchmetrics update costs tens of microseconds a metric whatever the batch holds (argument
    handling, state bookkeeping), as much as a small network's whole step on a CPU; applied to
    ``every`` batches at once it is paid once. Only for metrics whose states are integer counts or
    concatenated values (classification's stat scores, AUROC's scores), so the epoch's values are
    bitwise those of one update per batch. ``apply`` before reading the metrics.
    """

    def __init__(self, metrics: MetricCollection, every: int = 32) -> None:
        self.metrics, self.every = metrics, every
        self.pending: list[tuple[torch.Tensor, ...]] = []

    def update(self, *args: torch.Tensor) -> None:
        self.pending.append(args)
        if len(self.pending) >= self.every:
            self.apply()

    def apply(self) -> None:
        if self.pending:
            batches, self.pending = self.pending, []
            self.metrics.update(*(torch.cat(parts) for parts in zip(*batches, strict=True)))


def log_step_values(module: L.LightningModule, values: dict[str, float], step: int) -> None:
    """Per-step values straight to the module's loggers (``self.log`` costs a millisecond a call; see
    ``pipeline.models.base``), never during the sanity check."""
    if module.trainer.sanity_checking:
        return
    for logger in module.loggers:
        logger.log_metrics(values, step=step)
