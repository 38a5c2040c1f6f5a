"""What is logged as the run's MLflow model (PyTorch flavour): raw inputs in, predictions out.

Training feeds networks normalised batches (``ArrayDataModule.on_after_batch_transfer``);
a user of the logged model has raw data. So what is logged wraps the network with the
data's scaling and the output's meaning:

- classifiers take raw features (or pixel values 0-255) of shape ``(n, *input_shape)`` and
  return class probabilities ``(n, classes)`` (one column, the positive class, when binary);
- regressors take raw features and return predictions ``(n, 1)``;
- GANs take noise ``(n, latent_dim)`` (plus a last column with the class, or InfoGAN code,
  when the generator is conditioned on one) and return images in [0, 1].

``mlflow.pyfunc.load_model(uri).predict(array)`` and ``mlflow.pytorch.load_model(uri)`` both
work; the classes below must be importable where the model loads (``pip install`` this project).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn


class Predictor(nn.Module):
    """A supervised network behind the data's scaling: raw inputs in, probabilities or values out."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, scale: float, output: str) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.scale = scale
        self.output = output  # "softmax", "sigmoid" or "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() * self.scale - self.mean) / self.std
        out = self.net(x)
        if self.output == "softmax":
            return out.softmax(dim=1)
        return out.sigmoid() if self.output == "sigmoid" else out


class SampleGenerator(nn.Module):
    """A GAN's sampling generator: noise (and a class or code column) in, images in [0, 1] out."""

    def __init__(self, generator: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.generator = generator
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        labels = z[:, self.latent_dim].long() if self.generator.conditional else None
        return (self.generator(z[:, : self.latent_dim], labels) + 1) / 2


def servable(module: L.LightningModule, datamodule: Any) -> tuple[nn.Module, np.ndarray]:
    """The module to log and an input example (two rows) for its signature."""
    if module.family == "gan":
        generator = SampleGenerator(module.sampler, module.hparams.latent_dim)
        width = module.hparams.latent_dim + int(module.sampler.conditional)
        return generator.cpu().eval(), np.zeros((2, width), dtype=np.float32)
    scale = 1 / 255 if datamodule.meta["kind"] == "image" else 1.0  # images are stored as uint8 pixels
    if datamodule.normalize:
        mean, std = datamodule._mean[0], datamodule._std[0]
    else:
        mean, std = torch.zeros(()), torch.ones(())
    output = "identity" if module.family == "regression" else ("sigmoid" if module.binary else "softmax")
    predictor = Predictor(module.net, mean.clone(), std.clone(), scale, output).cpu().eval()
    x, _ = datamodule.splits["test"].tensors if "test" in datamodule.splits else (None, None)
    example = x[:2].float().numpy() if x is not None else np.zeros((2, *datamodule.input_shape), dtype=np.float32)
    return predictor, example
