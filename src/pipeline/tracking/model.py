"""What is logged as the run's MLflow model (PyTorch flavour): raw inputs in, predictions out.

Training feeds networks scaled and normalised batches; a user of the logged model has raw
data. So what is logged wraps the network with the data's ``ModelInput`` (``pipeline.data.spec``,
the same transform training used) and the output's meaning:

- classifiers take raw features (or pixel values 0-255) of shape ``(n, *input_shape)`` and
  return class probabilities ``(n, classes)`` (one column, the positive class, when binary);
- regressors take raw features and return predictions ``(n, 1)``;
- GANs take noise ``(n, latent_dim)`` (plus a last column with the class, or InfoGAN code,
  when the generator is conditioned on one) and return images in [0, 1];
- agents (DQN) take observations ``(n, *observation_shape)`` and return one value per action
  ``(n, actions)``: the greedy action is the largest;
- sequence models take questions as text (``["12+345"]``) and return answers as text: logged
  as a python-function model (``pipeline.tracking.text_model``), not in the PyTorch flavour.

``mlflow.pyfunc.load_model(uri).predict(array)`` works for all (a list of questions for a sequence
model), ``mlflow.pytorch.load_model(uri)`` for the PyTorch flavour; the classes below must be
importable where the model loads (``pip install`` this project).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from pipeline.data.spec import DatasetSpec, ModelInput
from pipeline.models.gan_networks import Generator


class Predictor(nn.Module):
    """A supervised network behind the data's scaling: raw inputs in, probabilities or values out."""

    # class defaults: a regressor pickled before targets could be standardised unpickles without them
    target_mean: float = 0.0
    target_std: float = 1.0

    def __init__(self, net: nn.Module, spec: DatasetSpec, output: str) -> None:
        super().__init__()
        self.model_input = ModelInput(spec)
        self.net = net
        self.output = output  # "softmax", "sigmoid", "identity", "action_values" or "sequence"
        self.target_mean, self.target_std = spec.target_scale  # a regressor's standardised target, back to its units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self.model_input(x))
        if self.output == "softmax":
            return out.softmax(dim=1)
        if self.output == "sequence":  # (n, length, vocabulary): a distribution per answer character
            return out.softmax(dim=-1)
        if self.output == "action_values":
            return out
        return out.sigmoid() if self.output == "sigmoid" else out * self.target_std + self.target_mean


class QuestionAnswerer:
    """A sequence model as text: questions encoded as its training questions were (padded, reversed when they
    were), the most likely character at each answer position, decoded without the padding."""

    def __init__(self, predictor: Predictor, encoding: Mapping[str, Any]) -> None:
        self.predictor = predictor
        self.length, self.reverse = int(encoding["length"]), bool(encoding["reverse"])

    def __call__(self, questions: Sequence[str]) -> list[str]:
        from pipeline.data.tokens import decode_ids, encode_text

        ids = torch.from_numpy(encode_text(list(questions), self.length, reverse=self.reverse))
        with torch.no_grad():
            return decode_ids(self.predictor(ids).argmax(dim=-1).numpy())


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


def servable(module: L.LightningModule, datamodule: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The model to log, an input example (two rows: torch.export keeps a batch of one fixed) for its
    signature, and the metadata ``pipeline.predict`` reads back: the family, the output and the data spec.
    A sequence model is a ``QuestionAnswerer`` with two test questions as text."""
    metadata: dict[str, Any] = {"family": module.family, "data": datamodule.spec.record()}
    if module.family == "gan":
        sampler, latent_dim = module.sampler, module.hparams["latent_dim"]
        assert isinstance(sampler, Generator)  # GANModule.sampler
        generator = SampleGenerator(sampler, latent_dim)
        width = latent_dim + int(sampler.conditional)
        return generator.cpu().eval(), np.zeros((2, width), dtype=np.float32), {**metadata, "output": "images"}
    predictor = Predictor(module.get_submodule("net"), datamodule.spec, output_kind(module)).cpu().eval()
    if module.family == "dqn":  # two observations of the environment's first test episodes
        env = datamodule.eval_env
        example = np.stack([env.reset(seed=seed)[0] for seed in datamodule.test_seeds[:2]]).astype(np.float32)
        return predictor, example, {**metadata, "output": predictor.output}
    x, _ = datamodule.splits["test"].tensors if "test" in datamodule.splits else (None, None)
    if module.family == "sequence":
        from pipeline.data.tokens import decode_ids

        encoding = datamodule.spec.encoding or {}
        assert x is not None, "the sequence datasets have a test split"
        questions = decode_ids(x[:2].numpy(), reverse=bool(encoding["reverse"]))
        return QuestionAnswerer(predictor, encoding), questions, {**metadata, "output": "text"}
    example = x[:2].float().numpy() if x is not None else np.zeros((2, *datamodule.spec.input_shape), dtype=np.float32)
    return predictor, example, {**metadata, "output": predictor.output}


def output_kind(module: L.LightningModule) -> str:
    """What a supervised module's logged model returns: softmax (classes), sigmoid (binary), identity
    (regression), action values (an agent) or sequence (per answer character)."""
    if module.family == "regression":
        return "identity"
    if module.family == "dqn":
        return "action_values"
    if module.family == "sequence":
        return "sequence"
    return "sigmoid" if module.binary else "softmax"
