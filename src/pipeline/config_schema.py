"""The schema of the config keys users set most, checked before any work: a wrong type or an out-of-range
value fails at once, naming the key, the value and what is expected.

    python -m pipeline.train trainer.max_epochs=abc
    ConfigError: invalid config value: trainer.max_epochs='abc': Input should be a valid integer

Why pydantic rather than Hydra's structured configs: OmegaConf's dataclass schemas check types
but not ranges (``optimizer.lr=-1`` would pass), and every group file would have to name its
schema in its defaults list. Here one model per section is validated against the composed
config; keys the schema does not name pass through, so a new model or optimizer option needs
no schema change.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from omegaconf import DictConfig, DictKeyType, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError

# Reusable constrained types. Integers are strict (2.5 epochs is a mistake, not 2), floats accept ints.
Count = Annotated[int, Field(strict=True, ge=1)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
Seed = Annotated[int, Field(strict=True, ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
OpenFraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
# A held-out split: a row count, or a fraction of the rows
SplitSize = Annotated[int, Field(strict=True, ge=1)] | OpenFraction
# A batch limit: a number of batches, or a fraction of them
BatchLimit = NonNegativeInt | Fraction
# Lightning's accepted precision values (lightning.fabric.connector._PRECISION_INPUT)
Precision = Literal[
    64,
    32,
    16,
    "64",
    "32",
    "16",
    "bf16",
    "64-true",
    "32-true",
    "16-true",
    "bf16-true",
    "16-mixed",
    "bf16-mixed",
    "transformer-engine",
    "transformer-engine-float16",
]


class Section(BaseModel):
    """A config section: the named keys are checked, any other key passes."""

    model_config = ConfigDict(extra="allow")


class Trainer(Section):
    """https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-class-api"""

    max_epochs: Annotated[int, Field(strict=True, ge=-1)] | None = None
    min_epochs: NonNegativeInt | None = None
    max_steps: Annotated[int, Field(strict=True, ge=-1)] = -1
    devices: Annotated[int, Field(strict=True, ge=-1)] | str | list[NonNegativeInt] = "auto"
    num_nodes: Count = 1
    precision: Precision | None = None
    limit_train_batches: BatchLimit | None = None
    limit_val_batches: BatchLimit | None = None
    limit_test_batches: BatchLimit | None = None
    check_val_every_n_epoch: Count | None = 1
    log_every_n_steps: Count | None = None
    accumulate_grad_batches: Count = 1
    gradient_clip_val: NonNegative | None = None


class Datamodule(Section):
    batch_size: Count = 1
    eval_batch_size: Count | None = None
    num_workers: NonNegativeInt = 0
    seed: Seed = 0
    classes: list[NonNegativeInt] | None = None


class Preprocess(Section):
    val_size: SplitSize | None = None
    test_size: SplitSize | None = None
    seed: Seed = 0


class Data(Section):
    datamodule: Datamodule | None = None
    preprocess: Preprocess | None = None


class Optimizer(Section):
    lr: Positive | None = None
    weight_decay: NonNegative = 0.0
    momentum: Fraction = 0.0
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] | None = None
    eps: Positive | None = None


class Network(Section):
    """The widths, depths and degrees of a network builder (``model.net``, a GAN's two networks)."""

    hidden: list[Count] | None = None
    width: Count | None = None
    convs: list[Count] | None = None
    pool: Count | None = None
    degree: Count | None = None
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None


class Model(Section):
    net: Network | None = None
    generator: Network | None = None
    discriminator: Network | None = None
    latent_dim: Count | None = None
    latent_code: NonNegativeInt | None = None
    ema_decay: OpenFraction | None = None
    grid_cols: Count | None = None
    val_samples: Annotated[int, Field(strict=True, ge=2)] | None = None
    test_samples: Annotated[int, Field(strict=True, ge=2)] | None = None


class Config(Section):
    """The sections of a composed train, evaluate or prepare config (each optional)."""

    seed: Seed | None = None
    threads: Count | None = None
    trainer: Trainer | None = None
    data: Data | None = None
    optimizer: Optimizer | None = None
    model: Model | None = None


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming every key of ``cfg`` that the schema refuses, its value and what is expected."""
    values = {key: _plain(cfg, key) for key in Config.model_fields if key in cfg}
    try:
        Config.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe(exc, values)) from None


def _plain(parent: DictConfig | ListConfig, key: DictKeyType) -> Any:
    """``parent[key]`` as plain values, resolved against the whole config. An interpolation that cannot be
    resolved yet (``${hydra:runtime.output_dir}`` outside a Hydra run, as in the DVC compose stage)
    stays as its text: the schema checks what it can."""
    try:
        if isinstance(parent, DictConfig):
            node = parent[key]
        else:
            assert isinstance(key, int)  # a list's keys are the indices below
            node = parent[key]
    except OmegaConfBaseException:
        return OmegaConf.to_container(parent, resolve=False)[key]  # type: ignore[index]
    if isinstance(node, DictConfig):
        return {k: _plain(node, k) for k in node}
    if isinstance(node, ListConfig):
        return [_plain(node, i) for i in range(len(node))]
    return node


def describe(exc: ValidationError, values: Any) -> str:
    """One line per refused key, ``key=value: what was expected``; the alternatives of a union are joined."""
    problems: dict[str, list[str]] = {}
    shown: dict[str, Any] = {}
    for error in exc.errors():
        key, value = _key_and_value(error["loc"], values)
        problems.setdefault(key, [])
        if error["msg"] not in problems[key]:
            problems[key].append(error["msg"])
        shown[key] = value
    lines = [f"{key}={shown[key]!r}: {'; or '.join(messages)}" for key, messages in problems.items()]
    return "invalid config value" + ("s:\n  " if len(lines) > 1 else ": ") + "\n  ".join(lines)


def _key_and_value(loc: tuple[int | str, ...], values: Any) -> tuple[str, Any]:
    """The dotted config key of a pydantic error location, without the type tags a union adds, and its value."""
    parts: list[str] = []
    node = values
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            parts.append(str(part))
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            parts[-1] += f"[{part}]"
        elif not isinstance(node, dict | list):
            break
    return ".".join(parts), node
