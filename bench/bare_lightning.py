"""The floor of any Lightning pipeline: the plain loop's network, tensors and optimizer under a bare ``L.Trainer``.

No callbacks (but the timing probe), no logger, no checkpoints, no progress bar, no model
summary, no sanity check, no metrics: a ``training_step`` that returns the loss and a
``validation_step`` that counts correct answers, over whole-batch indexed tensors (as the
pipeline's datamodule serves them). Its time per epoch against ``bench.plain_loop`` is what
Lightning's loop itself costs; the pipeline's against this is what the pipeline adds.

    python -m bench.bare_lightning --processed-dir datasets/processed/mnist --net tiny_cnn \
        --optimizer adam --lr 0.001 --batch-size 128 --epochs 2 --out bare.json

``--module pipeline`` trains the pipeline's own ``ClassificationModule`` (its loss mean, metric updates and
epoch logging) on the same tensors under the same bare trainer: what the pipeline's module code adds, apart
from its trainer's callbacks, logger, datamodule and settings (``bench.ablate --floors``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from bench.plain_loop import Setup, arguments, prepare
from bench.probes import TimingProbe
from pipeline.models.classification import ClassificationModule


class BareModule(L.LightningModule):
    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        super().__init__()
        self.net = net
        self.optimizer = optimizer
        self.loss_fn = nn.CrossEntropyLoss()
        self.correct = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.correct += int((self.net(x).argmax(1) == y).sum())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer


class IndexBatches(Sampler[torch.Tensor]):
    """One index tensor per batch, drawn as the plain loop draws them (``randperm(n).split(batch_size)``)."""

    def __init__(self, size: int, batch_size: int, shuffle: bool) -> None:
        self.size, self.batch_size, self.shuffle = size, batch_size, shuffle

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.size) if self.shuffle else torch.arange(self.size)
        yield from order.split(self.batch_size)

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)


def batches(tensors: tuple[torch.Tensor, torch.Tensor], batch_size: int, shuffle: bool) -> DataLoader:
    """Whole-batch indexing (``x[indices]``), like the plain loop's slicing and the pipeline's datamodule."""
    sampler = IndexBatches(len(tensors[1]), batch_size, shuffle)
    return DataLoader(TensorDataset(*tensors), sampler=sampler, batch_size=None)


def pipeline_module(setup: Setup, processed_dir: Path) -> ClassificationModule:
    """The pipeline's classifier around the baseline's own network and optimizer."""
    meta = json.loads((processed_dir / "meta.json").read_text())
    if len(meta["class_names"]) < 3:  # the baseline's net has an output per class, the pipeline's binary head one
        raise SystemExit(f"--module pipeline needs 3 or more classes; {processed_dir} has {len(meta['class_names'])}")
    return ClassificationModule(
        len(meta["class_names"]),
        net=lambda **_: setup.net,
        input_shape=meta["input_shape"],
        optimizer=lambda params: setup.optimizer,
    )


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--module", choices=["bare", "pipeline"], default="bare")
    args = parser.parse_args(argv)
    setup = prepare(args)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        limit_train_batches=args.steps_per_epoch or 1.0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[TimingProbe(str(args.out))],
    )
    bare = args.module == "bare"
    module = BareModule(setup.net, setup.optimizer) if bare else pipeline_module(setup, args.processed_dir)
    trainer.fit(
        module,
        train_dataloaders=batches(setup.train, args.batch_size, shuffle=True),
        val_dataloaders=batches(setup.val, args.batch_size, shuffle=False),
    )


if __name__ == "__main__":
    main()
