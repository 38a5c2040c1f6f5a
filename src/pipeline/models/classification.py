"""Classification: logistic regression, MLPs and CNNs; binary (one logit, BCE) or multi-class (softmax, CE)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from pipeline.errors import ModelConfigError
from pipeline.models.base import STAGES, SupervisedModule
from pipeline.models.metrics import PendingUpdates


class ClassificationModule(SupervisedModule):
    """Two classes get one logit with binary cross-entropy (and AUROC); more get softmax cross-entropy."""

    task = "classification"
    family = "classification"

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        if num_classes < 2:
            raise ModelConfigError(f"classification needs at least 2 classes, the dataset has {num_classes}")
        super().__init__(num_outputs=1 if num_classes == 2 else num_classes, **kwargs)
        self.binary = num_classes == 2
        self.num_classes = num_classes
        self.loss_fn: nn.Module = nn.BCEWithLogitsLoss() if self.binary else nn.CrossEntropyLoss()
        # One collection per stage, so train, val and test accumulate separately.
        self.train_metrics = self._metrics("train/")
        self.val_metrics = self._metrics("val/")
        self.test_metrics = self._metrics("test/")
        # Updated 32 batches at a time: 24 µs a batch of a 7-class MLP instead of 290 (bench/README.md);
        # the counts, and so the epoch's values, are bitwise the same.
        self.pending_updates = {stage: PendingUpdates(getattr(self, f"{stage}_metrics")) for stage in STAGES}
        # Test-time detail: per-class accuracy and the confusion matrix (figures come from callbacks).
        self.test_confusion = MulticlassConfusionMatrix(max(num_classes, 2))

    def _metrics(self, prefix: str) -> MetricCollection:
        if self.binary:
            return MetricCollection(
                {
                    "acc": BinaryAccuracy(),
                    "f1": BinaryF1Score(),
                    "auroc": BinaryAUROC(),
                },
                prefix=prefix,
            )
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(self.num_classes, average="micro"),
                "f1": MulticlassF1Score(self.num_classes, average="macro"),
            },
            prefix=prefix,
        )

    def model_step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        if self.binary:
            logits = logits.squeeze(1)
            loss = self.loss_fn(logits, y.float())
            scores, predicted = torch.sigmoid(logits), (logits > 0).long()
        else:
            loss = self.loss_fn(logits, y)
            scores, predicted = logits, logits.argmax(dim=1)
        self.pending_updates[stage].update(scores.detach(), y)
        if stage == "test":
            self.test_confusion.update(predicted, y)
        return loss

    def epoch_metrics(self, stage: str) -> MetricCollection:
        self.pending_updates[stage].apply()
        return super().epoch_metrics(stage)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class indices of a (normalised) batch: the sign of the one logit, or the argmax."""
        logits = self(x)
        return (logits[:, 0] > 0).long() if self.binary else logits.argmax(dim=1)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        confusion = self.test_confusion.compute()
        per_class = confusion.diag() / confusion.sum(dim=1).clamp(min=1)
        for index, accuracy in enumerate(per_class.tolist()):
            self.log(f"test/acc_class_{index}", accuracy)
        self.confusion_matrix = confusion.cpu()
        self.test_confusion.reset()
