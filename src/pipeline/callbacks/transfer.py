"""Transfer learning: start a model from another run's feature layers, frozen, and train only a new head.

A Lightning callback (on ``BaseFinetuning``) rather than a model option, so the model's
config and its checkpoints stay those of a plain model: a phase-2 checkpoint holds every
weight it needs and ``pipeline.models.checkpoints.load_module`` rebuilds it without the phase-1 file.

    python -m pipeline.train experiment=mnist_transfer_5_9 callbacks.transfer.checkpoint=<phase-1 .ckpt>
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from pipeline.errors import ModelConfigError
from pipeline.models.checkpoints import KEY, check_family

log = logging.getLogger(__name__)


def head_name(pl_module: L.LightningModule) -> str:
    """The classification head: the last layer of ``pl_module.net`` that holds parameters (``net.11`` for lenet)."""
    names = [
        f"net.{name}"
        for name, module in pl_module.get_submodule("net").named_modules()
        if name and any(True for _ in module.parameters(recurse=False))
    ]
    if not names:
        raise ModelConfigError("transfer: the model's network has no layer with parameters to use as its head")
    return names[-1]


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


class TransferFeatures(BaseFinetuning):
    """Copy every weight of ``net`` except the head's from ``checkpoint``, then freeze those feature layers.

    ``checkpoint=None`` keeps the random initialisation: frozen *random* features, the
    baseline that shows what the pretrained ones are worth. ``freeze=False`` fine-tunes
    everything from the copied weights instead. ``head`` names the layer that is trained
    from scratch (default: the network's last layer with parameters).

    Batch norm: with ``train_bn=False`` (the default) frozen batch-norm layers keep their
    scale, shift *and* running statistics, and are held in eval mode while training, so the
    head learns on exactly the features the model is evaluated with (``BaseFinetuning.freeze``
    alone would normalise with each batch's statistics in training and with the running ones
    in evaluation). ``train_bn=True`` trains them with the head.
    """

    def __init__(
        self, checkpoint: str | None, freeze: bool = True, train_bn: bool = False, head: str | None = None
    ) -> None:
        super().__init__()
        self.checkpoint = str(checkpoint) if checkpoint else None
        self.freeze_features = freeze
        self.train_bn = train_bn
        self.head = head
        self._frozen_bn: list[_BatchNorm] = []
        self.counts: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # testing or predicting loads a finished checkpoint: nothing to copy or freeze
            super().setup(trainer, pl_module, stage)

    def feature_modules(self, pl_module: L.LightningModule, head: str) -> list[nn.Module]:
        return [
            module
            for name, module in pl_module.named_modules()
            if name.startswith("net.")
            and not (name == head or name.startswith(f"{head}."))
            and (not list(module.children()) or any(True for _ in module.parameters(recurse=False)))
        ]

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        head = self.head or head_name(pl_module)
        if head not in dict(pl_module.named_modules()):
            raise ModelConfigError(f"transfer: head={head!r} is not a layer of the model (e.g. net.0, net.1, ...)")
        if self.checkpoint:
            self.load_features(pl_module, head)
        if self.freeze_features:
            features = self.feature_modules(pl_module, head)
            self.freeze(features, train_bn=self.train_bn)
            self._frozen_bn = [m for m in features if isinstance(m, _BatchNorm) and not self.train_bn]
        trainable, total = count_parameters(pl_module)
        self.counts = {"transfer/trainable_params": float(trainable), "transfer/total_params": float(total)}
        log.info(
            "transfer: features from %s, %s; head %s; %d of %d parameters trainable",
            self.checkpoint or "a random initialisation",
            "frozen" if self.freeze_features else "trainable",
            head,
            trainable,
            total,
        )

    def load_features(self, pl_module: L.LightningModule, head: str) -> None:
        """Copy the feature weights and buffers (batch-norm statistics too); refuse a checkpoint that does not fit."""
        assert self.checkpoint is not None  # freeze_before_training calls this only with a checkpoint
        if not Path(self.checkpoint).is_file():
            raise ModelConfigError(
                f"transfer: the source checkpoint {self.checkpoint} does not exist; train that "
                "model first, or point callbacks.transfer.checkpoint at its .ckpt file"
            )
        checkpoint = check_family(self.checkpoint, getattr(pl_module, "family", "classification"))
        source: dict[str, torch.Tensor] = checkpoint["state_dict"]
        target = pl_module.state_dict()

        def is_feature(key: str) -> bool:
            return key.startswith("net.") and not key.startswith(f"{head}.")

        wanted = [k for k in target if is_feature(k)]
        problems = [
            f"{k} is missing there"
            if k not in source
            else f"{k} has shape {list(source[k].shape)} there but {list(target[k].shape)} here"
            for k in wanted
            if k not in source or source[k].shape != target[k].shape
        ]
        problems += [f"{k} is there but not here" for k in source if is_feature(k) and k not in target]
        if problems:
            record = checkpoint[KEY]
            net = record["model"].get("net", {}).get("_target_", record["model"]["_target_"])
            raise ModelConfigError(
                f"checkpoint {self.checkpoint} ({net}, trained on data={record['data']['name']} with inputs of shape "
                f"{record['data'].get('input_shape')}) does not fit this model's feature layers: "
                + "; ".join(problems[:3])
                + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
            )
        with torch.no_grad():
            for key in wanted:
                target[key].copy_(source[key])

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        # Nothing is unfrozen later. At each epoch start the frozen batch-norm layers are put in eval mode
        # (the model is built in train mode; validation restores the modes it found), so they normalise
        # with the pretrained running statistics, never with the batch's.
        for module in self._frozen_bn:
            module.eval()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Logged, so the run's metrics show how little of the model the second phase trains.
        for name, value in self.counts.items():
            pl_module.log(name, value)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "checkpoint": self.checkpoint}
