"""GAN sample quality measured by an MNIST classifier this pipeline trained (not Inception-v3).

Three scores, each from one pass of the classifier over a set of images in [0, 1]:

- Fréchet distance between the Gaussian statistics of real and generated penultimate-layer
  features (FID with the classifier in Inception's place; lower is better);
- the classifier-based Inception Score, exp(mean KL(p(y|x) ‖ p(y))): between 1 (every image
  the same class, or unrecognisable) and the number of classes (confident and balanced);
- for a conditional GAN, the classifier's accuracy on generated digits of the requested class.

Why not torchmetrics' ``FrechetInceptionDistance`` / ``InceptionScore``: both accept a custom
``nn.Module`` (FID reads ``num_features``; IS must get ``normalize=False`` because it casts
inputs to uint8 even for a custom module), but each runs its own copy of the classifier
(FID wants features, IS logits: two passes per image, a third for the class accuracy),
registers the classifier as a submodule (its weights would enter every GAN checkpoint),
and IS keeps every logit and splits them with ``torch.randperm`` on the global RNG. The exact
computation is a few lines: streaming float64 sums here, the same Fréchet formula as
torchmetrics (the trace of sqrt(Σ₁Σ₂) from the eigenvalues of Σ₁Σ₂), and IS as
exp(H(mean p) − mean H(p)), which is exp(mean KL) rewritten so it streams; the tests check
both against torchmetrics on the same features.

The floor (what real data scores against real data, ``real_floor``) is printed by
``python -m pipeline.gan_floor``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.data.processed import load_split
from pipeline.data.spec import DatasetSpec, ModelInput
from pipeline.errors import ModelConfigError
from pipeline.models.checkpoints import load_module


class FeatureStats:
    """Running count, sum and sum of outer products (float64) of feature vectors: their mean and covariance."""

    def __init__(self) -> None:
        self.n = 0
        self.total: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    @classmethod
    def of(cls, features: torch.Tensor) -> FeatureStats:
        stats = cls()
        stats.update(features)
        return stats

    def update(self, features: torch.Tensor) -> None:
        f = features.detach().flatten(1).to("cpu", torch.float64)
        if self.total is None or self.outer is None:  # the first batch: both start together
            self.total, self.outer = (
                torch.zeros(f.shape[1], dtype=torch.float64),
                torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64),
            )
        self.n += f.shape[0]
        self.total += f.sum(dim=0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n < 2 or self.total is None or self.outer is None:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.n}")
        mean = self.total / self.n
        cov = (self.outer - self.n * torch.outer(mean, mean)) / (self.n - 1)
        return mean, cov


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½), the squared Wasserstein-2 distance of the two Gaussians.

    tr((ΣaΣb)^½) is the sum of the square roots of the eigenvalues of ΣaΣb (similar to the
    positive semi-definite Σa^½ Σb Σa^½, so they are real and ≥ 0 up to rounding).
    """
    mean_a, cov_a = a.mean_cov()
    mean_b, cov_b = b.mean_cov()
    if mean_a.shape != mean_b.shape:
        raise ValueError(f"feature sizes differ: {mean_a.shape[0]} vs {mean_b.shape[0]}")
    cross = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    distance = (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(distance), 0.0)


class ClassScores:
    """Running sums of p(y|x) and of its entropy: the Inception Score, and the accuracy against requested labels."""

    def __init__(self) -> None:
        self.n = 0
        self.prob_sum: torch.Tensor | None = None
        self.entropy_sum = 0.0
        self.correct = 0
        self.requested = 0

    def update(self, probs: torch.Tensor, requested: torch.Tensor | None = None) -> None:
        """``probs``: N×K class probabilities; ``requested``: the labels the images were drawn for, if any."""
        p = probs.detach().to("cpu", torch.float64)
        self.n += p.shape[0]
        self.prob_sum = p.sum(dim=0) if self.prob_sum is None else self.prob_sum + p.sum(dim=0)
        self.entropy_sum += float(-(p * p.clamp_min(1e-300).log()).sum())
        if requested is not None:
            self.correct += int((p.argmax(dim=1) == requested.to("cpu")).sum())
            self.requested += int(requested.numel())

    def inception_score(self) -> float:
        if self.n == 0 or self.prob_sum is None:
            raise ValueError("the Inception Score needs at least one image")
        marginal = self.prob_sum / self.n
        marginal_entropy = float(-(marginal * marginal.clamp_min(1e-300).log()).sum())
        return float(np.exp(marginal_entropy - self.entropy_sum / self.n))

    def accuracy(self) -> float:
        if self.requested == 0:
            raise ValueError("no requested labels were given")
        return self.correct / self.requested


def inception_score(probs: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) ‖ p(y))) of N×K class probabilities."""
    scores = ClassScores()
    scores.update(probs)
    return scores.inception_score()


def class_accuracy(probs: torch.Tensor, requested: torch.Tensor) -> float:
    """The share of images the classifier assigns to the class they were generated for."""
    scores = ClassScores()
    scores.update(probs, requested)
    return scores.accuracy()


class Scorer:
    """A trained classifier split into its penultimate features and its last layer.

    Takes images in [0, 1] and applies the classifier's own input normalisation (its dataset's
    ``ModelInput``), so GAN samples are fed exactly as real digits were. Deliberately not an
    ``nn.Module``: assigned to a LightningModule it stays out of the GAN's state dict and checkpoints.
    """

    def __init__(self, net: nn.Module, spec: DatasetSpec) -> None:
        if not isinstance(net, nn.Sequential) or not isinstance(net[-1], nn.Linear) or len(net) < 2:
            raise ModelConfigError(
                f"the scorer must be a classifier whose net is an nn.Sequential ending in nn.Linear (the penultimate "
                f"layer gives the features); got {type(net).__name__}"
            )
        self.features = net[:-1].eval().requires_grad_(False)
        self.head = net[-1].eval().requires_grad_(False)
        self.input_shape = spec.input_shape
        self.model_input = ModelInput(spec)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Scorer:
        module, record = load_module(path, family="classification")
        return cls(module.get_submodule("net"), DatasetSpec.from_record(record["data"]))

    def to(self, device: torch.device | str) -> Scorer:
        self.features.to(device)
        self.head.to(device)
        self.model_input.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features and class probabilities of images in [0, 1]."""
        features = self.features(self.model_input.normalize(images.float()))
        logits = self.head(features)
        if logits.shape[1] == 1:  # a binary classifier's single logit
            p = torch.sigmoid(logits)
            return features, torch.cat([1 - p, p], dim=1)
        return features, logits.softmax(dim=1)


def score_images(scorer: Scorer, batches: Iterable[torch.Tensor]) -> tuple[FeatureStats, ClassScores]:
    """Feature statistics and class scores of batches of images in [0, 1] (uint8 batches are scaled)."""
    stats, scores = FeatureStats(), ClassScores()
    for images in batches:
        if images.dtype == torch.uint8:  # raw pixels: into [0, 1] as the classifier's data were
            images = scorer.model_input.scale(images)
        features, probs = scorer(images)
        stats.update(features)
        scores.update(probs)
    return stats, scores


def real_floor(
    scorer: Scorer, processed_dir: str | Path, classes: Sequence[int] | None = None, batch_size: int = 1000
) -> dict[str, float]:
    """What real data scores: Fréchet distance of real train vs real test features, IS of each real split.

    A generator cannot be expected to beat these; they put a GAN's figures in proportion.
    """
    results: dict[str, Any] = {}
    for split in ("train", "test"):
        x, y = load_split(Path(processed_dir), split)
        if classes is not None:
            x = x[np.isin(y, list(classes))]
        images = torch.from_numpy(np.ascontiguousarray(x))
        stats, scores = score_images(scorer, images.split(batch_size))
        results[split] = (stats, scores, len(images))
    return {
        "fid_train_vs_test": frechet_distance(results["train"][0], results["test"][0]),
        "is_test": results["test"][1].inception_score(),
        "is_train": results["train"][1].inception_score(),
        "n_train": results["train"][2],
        "n_test": results["test"][2],
    }
