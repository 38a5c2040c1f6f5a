"""The baseline: a minimal hand-written PyTorch training loop, as a notebook would have it.

The whole preprocessed dataset is read into float tensors once (scaled and normalised up
front), each step slices a shuffled batch out of them, and each epoch ends with a pass over
the validation split. No framework, no logging, no checkpoints: what is left is the cost of
the network itself, which is what the pipeline's time per epoch is compared against. The
input transform is written out here on purpose (not pipeline.data.spec's ModelInput): the
baseline uses nothing of the pipeline but its network builders.

    python -m bench.plain_loop --processed-dir datasets/processed/mnist --net tiny_cnn \
        --optimizer adam --lr 0.001 --batch-size 128 --epochs 2 --out plain.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.models import networks


def load(processed_dir: Path, split: str, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.load(processed_dir / f"{split}_x.npy"))
    y = torch.from_numpy(np.load(processed_dir / f"{split}_y.npy"))
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return (x - mean) / std, y


@dataclass
class Setup:
    """What both baselines (this loop and ``bench.bare_lightning``) train: the same tensors, net and optimizer."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    net: nn.Module
    optimizer: torch.optim.Optimizer


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--processed-dir", type=Path, required=True)
    parser.add_argument("--net", required=True, help="a builder of pipeline.models.networks, e.g. tiny_cnn")
    parser.add_argument("--net-kwargs", default="{}", help="JSON keyword arguments of the builder")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="stop an epoch's training after this many batches (like Lightning's limit_train_batches)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    return parser


def prepare(args: argparse.Namespace) -> Setup:
    torch.manual_seed(args.seed)
    meta = json.loads((args.processed_dir / "meta.json").read_text())
    shape = (1, -1) + (1,) * (len(meta["input_shape"]) - 1)
    mean = torch.tensor(meta["normalization"]["mean"]).reshape(shape)
    std = torch.tensor(meta["normalization"]["std"]).reshape(shape)
    net = getattr(networks, args.net)(
        input_shape=meta["input_shape"], num_outputs=len(meta["class_names"]), **json.loads(args.net_kwargs)
    )
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[args.optimizer](
        net.parameters(), lr=args.lr, weight_decay=args.weight_decay
    )
    return Setup(
        load(args.processed_dir, "train", mean, std), load(args.processed_dir, "val", mean, std), net, optimizer
    )


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    setup = prepare(args)
    (train_x, train_y), (val_x, val_y), net, optimizer = setup.train, setup.val, setup.net, setup.optimizer
    loss_fn = nn.CrossEntropyLoss()

    epochs = []
    loss = torch.zeros(())
    for _ in range(args.epochs):
        start, cpu_start = time.time(), time.process_time()
        net.train()
        for idx in torch.randperm(len(train_y)).split(args.batch_size)[: args.steps_per_epoch]:
            loss = loss_fn(net(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for x, y in zip(val_x.split(args.batch_size), val_y.split(args.batch_size), strict=False):
                correct += int((net(x).argmax(1) == y).sum())
        times = {"start": start, "end": time.time(), "cpu_start": cpu_start, "cpu_end": time.process_time()}
        epochs.append({**times, "val_acc": correct / len(val_y), "loss": loss.item()})
    args.out.write_text(json.dumps({"epochs": epochs}), encoding="utf-8")


if __name__ == "__main__":
    main()
