"""Generator and discriminator builders for the GAN family.

Like the builders in ``networks.py``, each takes the dataset's ``image_shape`` and
``num_classes`` (filled in by ``GANModule``), so a config names only what a user chooses:
widths, noise size, conditioning. Generators map noise (plus, when conditional, a label
embedding concatenated to it) to images in [-1, 1] (tanh); discriminators return a real/fake
logit per image and, when conditional, class logits from an auxiliary head (ACGAN: the
class loss on generated images pushes the generator to draw the requested digit, the
quickest route to samples a classifier recognises).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Generator(nn.Module):
    """``body`` maps ``latent_dim`` noise (+ an ``embed_dim`` label embedding when conditional) to images."""

    def __init__(self, body: nn.Module, latent_dim: int, num_classes: int, embed_dim: int = 0) -> None:
        super().__init__()
        self.body = body
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if embed_dim else None

    @property
    def conditional(self) -> bool:
        return self.embed is not None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional generator needs the labels to draw")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.body(z)


class Discriminator(nn.Module):
    """``features`` → a real/fake logit, plus class logits (the ACGAN auxiliary head) when conditional."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int, conditional: bool = False) -> None:
        super().__init__()
        self.features = features
        self.adversarial = nn.Linear(num_features, 1)
        self.classifier = nn.Linear(num_features, num_classes) if conditional else None

    @property
    def conditional(self) -> bool:
        return self.classifier is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.features(x)
        return self.adversarial(h).squeeze(1), (self.classifier(h) if self.classifier is not None else None)


def _size(shape: Sequence[int]) -> int:
    size = 1
    for d in shape:
        size *= int(d)
    return size


def _embed_dim(conditional: bool, embed_dim: int | None, num_classes: int) -> int:
    if not conditional:
        return 0
    return int(embed_dim) if embed_dim else num_classes


def mlp_generator(
    image_shape: Sequence[int],
    num_classes: int,
    latent_dim: int = 100,
    hidden: Sequence[int] = (256, 512),
    conditional: bool = False,
    embed_dim: int | None = None,
) -> Generator:
    """The course's plain GAN generator: noise → 256 → 512 → pixels, LeakyReLU(0.2), tanh output."""
    embed = _embed_dim(conditional, embed_dim, num_classes)
    layers: list[nn.Module] = []
    width = latent_dim + embed
    for size in hidden:
        layers += [nn.Linear(width, size), nn.LeakyReLU(0.2)]
        width = size
    layers += [nn.Linear(width, _size(image_shape)), nn.Tanh(), nn.Unflatten(1, tuple(int(d) for d in image_shape))]
    return Generator(nn.Sequential(*layers), latent_dim, num_classes, embed)


def mlp_discriminator(
    image_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (512, 256),
    dropout: float = 0.0,
    conditional: bool = False,
) -> Discriminator:
    """The course's plain GAN discriminator: pixels → 512 → 256 → logit, LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = _size(image_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.LeakyReLU(0.2)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    return Discriminator(nn.Sequential(*layers), width, num_classes, conditional)


def _quarter(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Channels and the size after two stride-2 stages; the DCGAN pair needs sides divisible by 4."""
    channels, height, width = (int(d) for d in image_shape)
    if height % 4 or width % 4:
        raise ValueError(f"the DCGAN networks need image sides divisible by 4, got {height}x{width}")
    return channels, height // 4, width // 4


def dcgan_generator(
    image_shape: Sequence[int],
    num_classes: int,
    latent_dim: int = 100,
    width: int = 16,
    conditional: bool = False,
    embed_dim: int | None = None,
) -> Generator:
    """DCGAN generator: Linear → 4w×H/4×W/4, two stride-2 transposed convs (4w → 2w → w), a 3×3 conv to the
    image channels, tanh; batch norm and ReLU after every layer but the last.

    The last 3×3 conv smooths the checkerboard of the stride-2 layers. Measured on MNIST
    (2,000 steps at batch 64, same CPU time): classifier Inception Score 5.6 and Fréchet
    distance 77, against 5.0 and 123 for the classic two-layer generator ending on a
    transposed conv. ``width=16`` (64 → 32 → 16 channels) keeps an MNIST epoch at batch 64
    near a minute and a half on one CPU core.
    """
    channels, h, w = _quarter(image_shape)
    embed = _embed_dim(conditional, embed_dim, num_classes)
    body = nn.Sequential(
        nn.Linear(latent_dim + embed, 4 * width * h * w, bias=False),
        nn.BatchNorm1d(4 * width * h * w),
        nn.ReLU(),
        nn.Unflatten(1, (4 * width, h, w)),
        nn.ConvTranspose2d(4 * width, 2 * width, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, channels, kernel_size=3, padding=1),
        nn.Tanh(),
    )
    return Generator(body, latent_dim, num_classes, embed)


def dcgan_discriminator(
    image_shape: Sequence[int],
    num_classes: int,
    width: int = 32,
    batch_norm: bool = True,
    dropout: float = 0.0,
    conditional: bool = False,
) -> Discriminator:
    """DCGAN discriminator: two stride-2 4×4 convs (C → w → 2w, LeakyReLU(0.2), batch norm on the second
    as in DCGAN), flattened into the heads."""
    channels, h, w = _quarter(image_shape)
    layers: list[nn.Module] = [nn.Conv2d(channels, width, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Conv2d(width, 2 * width, kernel_size=4, stride=2, padding=1, bias=not batch_norm))
    if batch_norm:
        layers.append(nn.BatchNorm2d(2 * width))
    layers.append(nn.LeakyReLU(0.2))
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Flatten())
    return Discriminator(nn.Sequential(*layers), 2 * width * h * w, num_classes, conditional)
