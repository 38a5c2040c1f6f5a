"""The data contract: what a processed dataset is to a model, and how its raw inputs become model inputs.

Everything after the data stages goes through these two: the datamodule's batches, model
building, the checkpoint's record (so a checkpoint alone feeds its model), evaluation,
figures, the logged MLflow model and the GAN scorer.

- ``DatasetSpec`` is built once, from ``meta.json`` (``DatasetSpec.from_meta``) or from a
  checkpoint's record (``DatasetSpec.from_record``): input shape, task, class names, the
  training split's normalisation and the pixel scale.
- ``ModelInput(spec)`` turns raw inputs (uint8 pixels, table features) into what the network
  was trained on: ``x / pixel_scale``, then ``(x - mean) / std`` when ``normalize``. The
  datamodule augments images between the two steps, so both are public.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

IMAGE_PIXEL_SCALE = 255.0  # images are stored as uint8 pixels; models see them in [0, 1]


@dataclass(frozen=True)
class DatasetSpec:
    """A processed dataset as a model sees it. ``class_names`` is empty for regression; ``mean`` and ``std``
    are per channel (images) or per feature (tables), of the training split's scaled inputs."""

    name: str
    task: str
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalize: bool = True
    pixel_scale: float = 1.0
    feature_names: tuple[str, ...] = ()  # a table's features, in the model's order (one-hot: ``<column>=<value>``)
    # a table's raw columns, categories and file format (``pipeline.data.encoding.TableEncoding.record``):
    # how predict turns new rows, text values included, into features
    encoding: Mapping[str, Any] | None = None
    target_scale: tuple[float, float] = (0.0, 1.0)  # a regressor learns (y - mean) / std: (mean, std)
    output_length: int = 0  # a sequence task's answer length (its class_names are the vocabulary)

    @classmethod
    def from_meta(
        cls,
        meta: Mapping[str, Any],
        normalize: bool = True,
        classes: Sequence[int] | None = None,
        relabel: bool = False,
    ) -> DatasetSpec:
        """The spec of a ``meta.json``; with ``classes`` and ``relabel`` only those classes, renumbered 0..k-1."""
        names = list(meta.get("class_names", []))
        if classes is not None and relabel:
            names = [names[c] for c in classes]
        return cls(
            name=meta["name"],
            task=meta["task"],
            input_shape=tuple(meta["input_shape"]),
            class_names=tuple(names),
            mean=tuple(meta["normalization"]["mean"]),
            std=tuple(meta["normalization"]["std"]),
            normalize=bool(normalize),
            pixel_scale=IMAGE_PIXEL_SCALE if meta.get("kind") == "image" else 1.0,
            feature_names=tuple(meta.get("feature_names", ())),
            encoding=meta.get("encoding"),
            target_scale=_target_scale(meta.get("target_scale")),
            output_length=int(meta.get("output_length", 0)),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DatasetSpec:
        """The spec a checkpoint recorded (``record`` below); checkpoints written before the pixel scale was
        recorded hold images exactly when their inputs have three dimensions."""
        shape = tuple(record["input_shape"])
        scale = record.get("pixel_scale", IMAGE_PIXEL_SCALE if len(shape) == 3 else 1.0)
        return cls(
            name=record["name"],
            task=record["task"],
            input_shape=shape,
            class_names=tuple(record["class_names"]),
            mean=tuple(record["normalization"]["mean"]),
            std=tuple(record["normalization"]["std"]),
            normalize=bool(record["normalize"]),
            pixel_scale=float(scale),
            feature_names=tuple(record.get("feature_names", ())),
            encoding=record.get("encoding"),
            target_scale=_target_scale(record.get("target_scale")),
            output_length=int(record.get("output_length", 0)),
        )

    def record(self) -> dict[str, Any]:
        """Plain values for a checkpoint (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "name": self.name,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
            "normalize": self.normalize,
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "pixel_scale": self.pixel_scale,
            "feature_names": list(self.feature_names),
            "encoding": self.encoding,
            "target_scale": {"mean": self.target_scale[0], "std": self.target_scale[1]},
            "output_length": self.output_length,
        }

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def model_size(self) -> dict[str, Any]:
        """What a model's constructor takes from the data: ``input_shape``, ``num_classes`` when classifying,
        ``num_actions`` for an agent, and ``target_scale`` when the regression target is standardised
        (``preprocess.scale_target``)."""
        size: dict[str, Any] = {"input_shape": list(self.input_shape)}
        if self.task in ("classification", "sequence"):
            size["num_classes"] = self.num_classes
        if self.task == "sequence":
            size["output_length"] = self.output_length
        if self.task == "control":  # an agent: one value per action
            size["num_actions"] = self.num_classes
        if self.target_scale != (0.0, 1.0):
            size["target_scale"] = list(self.target_scale)
        return size


def _target_scale(record: Mapping[str, float] | None) -> tuple[float, float]:
    return (float(record["mean"]), float(record["std"])) if record else (0.0, 1.0)


class ModelInput(nn.Module):
    """Raw inputs to model inputs, on any device: ``scale`` then ``normalize`` (see the module docstring).

    An ``nn.Module`` so the statistics travel with a logged model (buffers); copies on other
    devices are made once, not per batch (a copy per batch would wait for the GPU).
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__()
        self.pixel_scale = spec.pixel_scale
        self.normalizes = spec.normalize
        self.passes_through = spec.task == "sequence"  # token ids: neither scaled nor normalised
        shape = (1, -1) + (1,) * (len(spec.input_shape) - 1)  # per channel for images, per feature for tables
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).reshape(shape))
        self._copies: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """Floats in the model's range: pixels divided by the pixel scale (never in place: a float input at scale 1
        comes back as itself)."""
        if self.passes_through:
            return x
        scaled = x.float()
        if self.pixel_scale == 1.0:
            return scaled
        # uint8 pixels: float() made a copy, divided in place (no second batch-sized tensor per step)
        return scaled.div_(self.pixel_scale) if scaled is not x else scaled / self.pixel_scale

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` with the training split's statistics, when the spec normalises."""
        if not self.normalizes or self.passes_through:
            return x
        mean, std = self.mean, self.std
        if mean.device != x.device:
            if x.device not in self._copies:
                self._copies[x.device] = (mean.to(x.device), std.to(x.device))
            mean, std = self._copies[x.device]
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.scale(x))
