"""A callback for tests that need a training slow enough to be killed half-way (``+callbacks.slow=...``)."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback


class SlowEpochs(Callback):
    """Sleeps ``seconds`` after every training epoch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        time.sleep(self.seconds)
