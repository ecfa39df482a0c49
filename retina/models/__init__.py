"""Model registry: configs name a model, code registers it; YAML never imports Python."""

from __future__ import annotations

from collections.abc import Callable

import keras

from retina.config import ModelConfig
from retina.errors import ConfigError

ModelBuilder = Callable[[ModelConfig, int], keras.Model]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def decorate(builder: ModelBuilder) -> ModelBuilder:
        _REGISTRY[name] = builder
        return builder

    return decorate


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(cfg: ModelConfig, image_size: int) -> keras.Model:
    """Builds the registered model ``cfg.name`` for square uint8 inputs of ``image_size``."""
    if cfg.name not in _REGISTRY:
        raise ConfigError(
            f"model.name={cfg.name!r} is not registered; choose one of {available_models()}."
        )
    return _REGISTRY[cfg.name](cfg, image_size)


from retina.models import small_cnn  # noqa: E402,F401  (registers itself)
