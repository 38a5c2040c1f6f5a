"""The teaching datasets are deterministic and teach their lesson (a linear model fails where it should)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier

from pipeline.data import synthetic

GENERATORS = [
    synthetic.line,
    synthetic.linear,
    synthetic.polynomial,
    synthetic.blobs,
    synthetic.circles,
    synthetic.xor,
    synthetic.spirals,
]


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.__name__)
def test_same_seed_same_data_other_seed_other_data(generator):
    a = generator(np.random.default_rng(3))
    b = generator(np.random.default_rng(3))
    c = generator(np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert len(a[0]) == len(a[1]) and a[0].ndim == 2 and len(a[2]) == a[0].shape[1]


def test_line_recovers_w_and_b():
    x, y, _, _ = synthetic.line(np.random.default_rng(0), n_samples=2000, w=2.0, b=-1.0, noise=0.1)
    fit = LinearRegression().fit(x, y)
    assert fit.coef_[0] == pytest.approx(2.0, abs=0.02) and fit.intercept_ == pytest.approx(-1.0, abs=0.02)


@pytest.mark.parametrize("generator", [synthetic.circles, synthetic.xor, synthetic.spirals], ids=lambda g: g.__name__)
def test_feature_extraction_sets_defeat_a_linear_model(generator):
    x, y, _, _ = generator(np.random.default_rng(0))
    assert set(np.unique(y)) == {0, 1}
    assert LogisticRegression().fit(x, y).score(x, y) < 0.7
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=2000, random_state=0).fit(x, y)
    assert mlp.score(x, y) > 0.95


def test_blobs_are_linearly_separable():
    x, y, _, _ = synthetic.blobs(np.random.default_rng(0))
    assert LogisticRegression().fit(x, y).score(x, y) > 0.95
