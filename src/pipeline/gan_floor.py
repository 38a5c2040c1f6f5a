"""The floor of the classifier-based GAN scores: what real data scores against real data.

    python -m pipeline.gan_floor experiments/mnist_cnn/model.ckpt datasets/processed/mnist [--classes 8]

prints (JSON) the Fréchet distance of real train vs real test features and the Inception
Score of the real test and train sets, as scored by that classifier (``pipeline.models.gan_metrics``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from pipeline.cli import report_user_errors
from pipeline.models.gan_metrics import Scorer, real_floor


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.gan_floor", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a classifier checkpoint written by pipeline.train (the scorer)")
    parser.add_argument("processed_dir", help="a preprocessed image dataset, e.g. datasets/processed/mnist")
    parser.add_argument("--classes", type=int, nargs="+", help="keep only these classes (e.g. 8 for a one-digit GAN)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    floor = report_user_errors(
        lambda: real_floor(Scorer.from_checkpoint(args.checkpoint), args.processed_dir, args.classes)
    )
    print(json.dumps(floor, indent=2))


if __name__ == "__main__":
    main()
