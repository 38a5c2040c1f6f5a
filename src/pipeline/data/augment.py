"""Random rotations, shifts (and mirroring) of a whole image batch at once, on the batch's device.

Why not ``torchvision.transforms.v2.RandomAffine``: a v2 transform draws one set of random
parameters per call, so on a batched ``N×C×H×W`` tensor every image would be rotated and
shifted the same way, and calling it once per sample is a Python loop per image. Here each
image gets its own angle, shift and mirroring: one ``N×2×3`` matrix of per-sample affine
parameters, then one ``affine_grid`` + ``grid_sample`` for the whole batch. The randomness comes from
torch's RNG on the batch's device, so ``seed_everything`` makes it repeat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RandomAffine(nn.Module):
    """Rotate each image by U(-d, d) degrees, shift it by U(-f, f) of its width and height and,
    with probability ``flip_probability``, mirror it left-right (clothes, not digits).

    Expects floats in ``[0, 1]`` before normalisation, so the corners the transform uncovers
    are filled with 0, the background of MNIST-like images (after normalisation 0 would be
    the mean grey). With every setting 0 the batch is returned unchanged.
    """

    def __init__(
        self, rotation_degrees: float = 0.0, shift_fraction: float = 0.0, flip_probability: float = 0.0
    ) -> None:
        super().__init__()
        if rotation_degrees < 0 or not 0 <= shift_fraction < 1 or not 0 <= flip_probability <= 1:
            raise ValueError(
                f"augment: rotation_degrees must be >= 0, shift_fraction in [0, 1) and flip_probability "
                f"in [0, 1], got {rotation_degrees}, {shift_fraction} and {flip_probability}"
            )
        self.rotation_degrees = float(rotation_degrees)
        self.shift_fraction = float(shift_fraction)
        self.flip_probability = float(flip_probability)

    def extra_repr(self) -> str:
        return (
            f"rotation_degrees={self.rotation_degrees}, shift_fraction={self.shift_fraction}, "
            f"flip_probability={self.flip_probability}"
        )

    def theta(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Per-sample ``N×2×3`` matrices mapping output to input coordinates (affine_grid's normalised [-1, 1])."""
        angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(self.rotation_degrees)
        # A shift of f·width pixels is 2f in normalised coordinates (the image spans [-1, 1]).
        shift = (torch.rand(n, 2, device=device) * 2 - 1) * (2 * self.shift_fraction)
        # A mirror reads output x from input -x: the sign of the matrix's x column (drawn only when
        # flips are asked for, so runs without them use no extra random numbers).
        mirror = torch.ones(n, device=device)
        if self.flip_probability:
            mirror = 1 - 2 * (torch.rand(n, device=device) < self.flip_probability).float()
        cos, sin = torch.cos(angle), torch.sin(angle)
        # A rotation in pixel space, expressed in normalised coordinates (x scaled by W/2, y by H/2),
        # so non-square images turn without shearing.
        return torch.stack(
            [
                torch.stack([cos * mirror, -sin * height / width, shift[:, 0]], dim=1),
                torch.stack([sin * width / height * mirror, cos, shift[:, 1]], dim=1),
            ],
            dim=1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"augment expects a float image batch N×C×H×W, got {x.dtype} of shape {list(x.shape)}")
        if self.rotation_degrees == 0 and self.shift_fraction == 0 and self.flip_probability == 0:
            return x
        n, _, height, width = x.shape
        theta = self.theta(n, height, width, x.device).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
