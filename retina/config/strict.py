"""Checks of a composed or hand-built config: no key may name Python to call
(``to_typed``), and every fixed-choice key holds one of its choices (``require_choice``,
``check_choices``)."""

from __future__ import annotations

import dataclasses
import typing
from enum import StrEnum

from omegaconf import OmegaConf

from retina.errors import ConfigError

# Keys through which Hydra's instantiate would import and call Python.
INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def refuse_instantiate_keys(node, path: str = "") -> None:
    """Raises ConfigError naming the first ``_target_``-style key of a job config.

    Models, optimizers, schedules and losses come from registries by name; a config value
    must never be able to import and call arbitrary Python. (Hydra's own ``hydra.*`` node,
    launchers and callbacks, is not part of the job config.)
    """
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in INSTANTIATE_KEYS:
                raise ConfigError(
                    f"{where}={value!r}: configs cannot name Python objects to call. Choose "
                    "registered components by name instead (model.name, optimizer.name, "
                    "schedule.name, ...)."
                )
            refuse_instantiate_keys(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            refuse_instantiate_keys(value, f"{path}[{index}]")


def to_typed(cfg):
    """A composed job config as its dataclass, after refusing instantiate keys."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    refuse_instantiate_keys(container)
    return OmegaConf.to_object(cfg)


def require_choice(key: str, value, choices) -> str:
    """``value`` if it is one of ``choices``; otherwise a ConfigError naming ``key`` and the
    valid choices. The one look-up every fixed-choice key goes through."""
    names = [str(choice) for choice in choices]
    if str(value) not in names:
        raise ConfigError(f"{key}={value!r} is not a valid choice; use one of {names}.")
    return str(value)


def check_choices(cfg, prefix: str = "") -> None:
    """Checks every ``StrEnum`` field of a config dataclass, nested ones included (configs
    composed by Hydra are checked already; this covers ones built in Python)."""
    hints = typing.get_type_hints(type(cfg))
    for item in dataclasses.fields(cfg):
        key, value = f"{prefix}{item.name}", getattr(cfg, item.name)
        kind = hints[item.name]
        if isinstance(kind, type) and issubclass(kind, StrEnum):
            require_choice(key, value, kind)
        elif dataclasses.is_dataclass(value):
            check_choices(value, f"{key}.")
