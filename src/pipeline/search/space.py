"""The search space of ``hydra.sweeper.params``, in the grammar of Hydra's Optuna sweeper, as Optuna 4
distributions.

    optimizer.lr: tag(log, interval(1e-4, 1e-2))   -> FloatDistribution(1e-4, 1e-2, log=True)
    trainer.max_epochs: interval(2, 8)               -> IntDistribution(2, 8)
    data.datamodule.batch_size: choice(64, 128, 256) -> CategoricalDistribution((64, 128, 256))
    model.net.width: range(8, 32, step=8)            -> IntDistribution(8, 32, step=8) (stop included, as before)
    seed: 7                                          -> fixed: every trial gets seed=7

The same grammar and the same distributions as hydra-optuna-sweeper 1.3 (whose Optuna 2 classes
Optuna 4 replaced by these three), parsed by Hydra's own override parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def search_space(params: Mapping[str, Any]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions of the swept keys, the fixed keys' values as override text)."""
    overrides = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override: choice, range or interval (``tag(log, ...)``: log scale)."""
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and isinstance(value, RangeSweep) and value.shuffle):
        # encoded: a list or dict choice comes as its override text ("[32,32]"), as Optuna needs
        choices = cast(list[CategoricalChoiceType], list(override.sweep_iterator(transformer=Transformer.encode)))
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep) and value.start is not None and value.stop is not None
        # stop is a possible value, as hydra-optuna-sweeper made it (unlike a grid sweep's range)
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep) and value.start is not None and value.end is not None
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(value.start, value.end, log=log)
    raise ValueError(f"hydra.sweeper.params: {override.input_line} is not a choice, range or interval")


def trial_overrides(values: Mapping[str, Any], fixed: Mapping[str, str]) -> list[str]:
    """A trial's overrides: the fixed keys, then the sampled values (as Hydra reads them back)."""
    return [f"{key}={value}" for key, value in fixed.items()] + [f"{key}={_text(v)}" for key, v in values.items()]


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)
