"""The small 1-D and 2-D teaching datasets of a classic deep-learning course, generated from a seed.

Each generator takes a numpy ``Generator`` and returns ``(features, target, feature_names,
target_name)``. The classification sets come in pairs with a lesson: ``blobs`` is
linearly separable (logistic regression works); ``circles``, ``xor`` and ``spirals`` are
not, so a linear model fails and an MLP, which learns its own features, succeeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.datasets import make_blobs, make_circles

Generated = tuple[np.ndarray, np.ndarray, list[str], str]


def _names(n: int) -> list[str]:
    return ["x"] if n == 1 else [f"x{i + 1}" for i in range(n)]


def line(
    rng: np.random.Generator,
    n_samples: int = 200,
    w: float = 2.0,
    b: float = -1.0,
    noise: float = 0.3,
    x_min: float = -2.0,
    x_max: float = 2.0,
) -> Generated:
    """A noisy line ``y = w*x + b + N(0, noise²)``: the fitted w and b should come back."""
    x = rng.uniform(x_min, x_max, size=(n_samples, 1))
    y = w * x[:, 0] + b + rng.normal(0.0, noise, size=n_samples)
    return x, y, _names(1), "y"


def linear(
    rng: np.random.Generator,
    n_samples: int = 500,
    weights: Sequence[float] = (1.5, -2.0, 0.5),
    bias: float = 0.7,
    noise: float = 0.2,
) -> Generated:
    """A multivariate linear target ``y = X·w + b + noise`` with standard-normal features."""
    w = np.asarray(weights, dtype=np.float64)
    x = rng.normal(size=(n_samples, len(w)))
    y = x @ w + bias + rng.normal(0.0, noise, size=n_samples)
    return x, y, _names(len(w)), "y"


def polynomial(
    rng: np.random.Generator,
    n_samples: int = 300,
    coefficients: Sequence[float] = (0.5, -1.0, -1.5, 1.0),
    noise: float = 0.3,
    x_min: float = -2.0,
    x_max: float = 2.0,
) -> Generated:
    """``y = c0 + c1*x + c2*x² + ... + noise``: a straight line underfits, polynomial features fit."""
    x = rng.uniform(x_min, x_max, size=(n_samples, 1))
    y = np.polynomial.polynomial.polyval(x[:, 0], np.asarray(coefficients, dtype=np.float64))
    y = y + rng.normal(0.0, noise, size=n_samples)
    return x, y, _names(1), "y"


def _seed_for_sklearn(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def blobs(rng: np.random.Generator, n_samples: int = 400, distance: float = 3.0, std: float = 1.0) -> Generated:
    """Two Gaussian blobs, ``distance`` apart: linearly separable, logistic regression's case."""
    centers = np.array([[-distance / 2, -distance / 2], [distance / 2, distance / 2]])
    x, y = make_blobs(n_samples=n_samples, centers=centers, cluster_std=std, random_state=_seed_for_sklearn(rng))
    return x, y, _names(2), "label"


def circles(rng: np.random.Generator, n_samples: int = 600, noise: float = 0.08, factor: float = 0.5) -> Generated:
    """Two concentric circles: no line separates them."""
    x, y = make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=_seed_for_sklearn(rng))
    return x, y, _names(2), "label"


def xor(rng: np.random.Generator, n_samples: int = 600, margin: float = 0.1, noise: float = 0.05) -> Generated:
    """XOR quadrants: the label is 1 where x1 and x2 have the same sign.

    Points within ``margin`` of an axis are left out."""
    x = rng.uniform(-1.0, 1.0, size=(4 * n_samples, 2))
    x = x[(np.abs(x) > margin).all(axis=1)][:n_samples]
    y = (np.sign(x[:, 0]) == np.sign(x[:, 1])).astype(np.int64)
    return x + rng.normal(0.0, noise, size=x.shape), y, _names(2), "label"


def spirals(rng: np.random.Generator, n_samples: int = 1000, turns: float = 1.5, noise: float = 0.1) -> Generated:
    """Two interleaved spirals, half the points each: the hardest of the course's 2-D cases."""
    per_arm = n_samples // 2
    parts, labels = [], []
    for arm in (0, 1):
        t = np.sqrt(rng.uniform(0.0, 1.0, size=per_arm)) * turns * 2 * np.pi
        angle = t + arm * np.pi
        points = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / (turns * 2 * np.pi)
        parts.append(points + rng.normal(0.0, noise / (turns * 2), size=points.shape))
        labels.append(np.full(per_arm, arm, dtype=np.int64))
    return np.concatenate(parts), np.concatenate(labels), _names(2), "label"
