"""Hydra's sweep syntax as an Optuna search space: ``interval(a,b)`` (``tag(log, ...)``
for a log scale), ``range(a,b[,step])`` and ``choice(...)`` or ``a,b,c``; any other
override is passed to every job as written."""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer

# Optuna is imported where it is used: Hydra imports every module of a plugin at start-up.


def search_space(overrides: list[str]) -> tuple[dict, list[str]]:
    """(distribution per swept key, the fixed overrides as written)."""
    distributions, fixed = {}, []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            distributions[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return distributions, fixed


def distribution(override: Override):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    if override.is_range_sweep() and not value.shuffle and all(isinstance(c, int) for c in choices):
        return IntDistribution(choices[0], choices[-1], step=int(value.step))
    return CategoricalDistribution(choices)
