"""Sequence to sequence: the addition lesson's encoder-decoder RNN, one softmax over the vocabulary per answer
character.

``teacher_forcing`` (with ``model.net.decoder=feedback``): the probability that, in a training batch,
an answer position's decoder step is fed the true previous character instead of its own guess
(one draw per position and batch). The ``train/`` metrics are then of partly forced answers, so
they read higher than ``val/``'s, which always feed back the model's own guesses.

Metrics: ``<stage>/char_acc`` (the share of answer characters right, padding included, as the
Keras example counts it) and ``<stage>/exact_match`` (the share of answers entirely right: what
a student asks of an adder).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from pipeline.errors import ModelConfigError
from pipeline.models.base import SupervisedModule


class ExactMatch(Metric):
    """The share of sequences whose every position is predicted right: logits ``(n, classes, length)``."""

    full_state_update = False
    correct: torch.Tensor  # states, added in __init__
    total: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += (logits.argmax(dim=1) == target).all(dim=1).sum()
        self.total += target.shape[0]

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total


class SequenceModule(SupervisedModule):
    """Cross-entropy over every answer position of a ``(n, output_length)`` target of token ids."""

    task = "sequence"
    family = "sequence"
    input_dtype = torch.long

    def __init__(
        self, num_classes: int, output_length: int, net: Any, teacher_forcing: float = 0.0, **kwargs: Any
    ) -> None:
        if not 0 <= teacher_forcing <= 1:
            raise ModelConfigError(f"model.teacher_forcing={teacher_forcing}: expected a probability in [0, 1]")
        super().__init__(
            net=functools.partial(net, output_length=output_length),
            num_outputs=num_classes,
            output_shape=(output_length, num_classes),
            **kwargs,
        )
        if teacher_forcing and not getattr(self.net, "feedback", False):
            raise ModelConfigError(
                f"model.teacher_forcing={teacher_forcing} feeds the decoder the true previous answer character; "
                "this decoder reads none: set model.net.decoder=feedback"
            )
        self.teacher_forcing = float(teacher_forcing)
        self.loss_fn = nn.CrossEntropyLoss()
        metrics = MetricCollection(
            {"char_acc": MulticlassAccuracy(num_classes, average="micro"), "exact_match": ExactMatch()}
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def model_step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        if stage == "train" and self.teacher_forcing:  # training only: evaluation feeds back its own guesses
            logits = self.net(x, targets=y, teacher_forcing=self.teacher_forcing)
        else:
            logits = self(x)
        logits = logits.transpose(1, 2)  # (n, classes, length): the layout cross-entropy and the metrics take
        loss = self.loss_fn(logits, y)
        getattr(self, f"{stage}_metrics").update(logits.detach(), y)
        return loss
