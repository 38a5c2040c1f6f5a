"""Per-epoch metrics of a run: the rows the loss-curve figure draws and the history CSV DVC plots.

The CSV is small and plain, written atomically after every epoch, so ``dvc plots show`` works
without MLflow and an interrupted run leaves no torn file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from pipeline.atomic import save_csv


class EpochRows(Callback):
    """Collects one row per training epoch of the epoch-level metrics (train/…, val/…, learning rate).

    The shared source of the history CSV (``EpochHistory``) and the loss-curve figure
    (``pipeline.callbacks.figures.LossCurves``). The rows are callback state, so resuming
    from last.ckpt keeps the earlier epochs' rows.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        for name, value in trainer.callback_metrics.items():
            # epoch-level only: train/loss_step is the per-step curve, already in the tracker
            if name.startswith(("train/", "val/", "lr-")) and not name.endswith("_step") and value.numel() == 1:
                row[name] = float(value)
        self.rows.append(row)
        self.row_added(trainer)

    def row_added(self, trainer: L.Trainer) -> None:
        """Called after each new row; subclasses write or draw here."""

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class EpochHistory(EpochRows):
    """The epoch rows as CSV: the loss curves ``dvc plots show`` draws.

    Written after every epoch, so a long run's curve can be plotted while it trains;
    Lightning's CSVLogger mixes step and epoch rows in one table.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def row_added(self, trainer: L.Trainer) -> None:
        columns = ["epoch", "step", *sorted({k for r in self.rows for k in r} - {"epoch", "step"})]
        save_csv(self.path, columns, ([_plain(r.get(c)) for c in columns] for r in self.rows))


def _plain(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
