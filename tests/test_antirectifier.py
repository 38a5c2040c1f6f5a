"""Keras' antirectifier layer: its output against a direct computation, the MLP builder's widths, and the
acceptance run on the real MNIST files (an MLP with it reaches 95 % in 2 epochs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.data.processed import load_split
from pipeline.models.networks import Antirectifier, mlp
from pipeline.tracking.loading import load_trained_model
from tests.test_own_data import _prepare, _train_and_evaluate


def _direct(x: np.ndarray) -> np.ndarray:
    """The Keras example's computation, in numpy: centre, L2-normalise, then [relu(x), relu(-x)]."""
    centred = x - x.mean(axis=1, keepdims=True)
    unit = centred / np.maximum(np.sqrt((centred**2).sum(axis=1, keepdims=True)), 1e-12)
    return np.concatenate([np.maximum(unit, 0), np.maximum(-unit, 0)], axis=1)


def test_the_layer_matches_a_direct_computation():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(5, 7))
    out = Antirectifier()(torch.from_numpy(x)).numpy()
    assert out.shape == (5, 14)
    np.testing.assert_allclose(out, _direct(x), rtol=1e-12, atol=1e-15)
    # every row is a unit vector split in its positive and negative parts
    np.testing.assert_allclose((out[:, :7] - out[:, 7:]) ** 2 @ np.ones(7), np.ones(5), rtol=1e-12)


def test_a_constant_row_gives_zeros_not_nans():
    out = Antirectifier()(torch.full((2, 4), 3.0))
    assert torch.equal(out, torch.zeros(2, 8))


def test_the_mlp_builder_widens_the_layer_after_it():
    net = mlp([1, 28, 28], 10, hidden=[256, 64], activation="antirectifier", dropout=0.1)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (512, 64), (128, 10)]
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.slow
def test_an_mnist_mlp_with_antirectifiers_reaches_95_percent_in_2_epochs(real_mirror, tmp_path):
    paths = _prepare(tmp_path, "data=mnist", mirror=str(real_mirror))
    overrides = ["data=mnist", "model=mlp_classifier", "model.net.activation=antirectifier", "trainer.max_epochs=2"]
    metrics = _train_and_evaluate(tmp_path, paths, *overrides)
    test_x, test_y = load_split(tmp_path / "processed/mnist", "test")
    model = load_trained_model(str(tmp_path / "model.ckpt"))
    accuracy = float((model.predict(test_x.astype(np.float32)).argmax(axis=1) == test_y).mean())
    assert metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert accuracy >= 0.95, f"{accuracy:.4f} after 2 epochs"
