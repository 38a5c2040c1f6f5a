"""Checkpoints that describe themselves: the callback that writes the record ``pipeline.models.checkpoints`` reads."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from pipeline.models.checkpoints import KEY


class RecordPipelineConfig(Callback):
    """Adds the ``pipeline`` entry (``checkpoint_record``: family, model config, dataset spec) to every checkpoint."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = self.record
