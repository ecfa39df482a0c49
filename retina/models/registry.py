"""Model registry: configs name a model, code registers it; YAML never imports Python
(timm's ``@register_model`` + ``create_model``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import keras

from retina.config import ModelConfig
from retina.errors import ConfigError
from retina.files import file_sha256
from retina.models.grading import Grading, attach_grading
from retina.models.heads import num_outputs

ModelBuilder = Callable[[ModelConfig, int], keras.Model]
_REGISTRY: dict[str, ModelBuilder] = {}

# model.weights values that are not file paths.
WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def decorate(builder: ModelBuilder) -> ModelBuilder:
        _REGISTRY[name] = builder
        return builder

    return decorate


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(cfg: ModelConfig, image_size: int) -> keras.Model:
    """Builds the registered model ``cfg.name`` for square uint8 inputs of ``image_size``,
    carrying the grading of its head (``retina.models.grading.grading_of``)."""
    if cfg.name not in _REGISTRY:
        raise ConfigError(
            f"model.name={cfg.name!r} is not registered; choose one of {available_models()}."
        )
    num_outputs(cfg)  # a bad model.head fails here, before a large backbone is built
    return attach_grading(_REGISTRY[cfg.name](cfg, image_size), Grading(cfg.head))


def without_pretrained(cfg: ModelConfig) -> ModelConfig:
    """The same architecture with random initial weights: for building a model whose
    weights a checkpoint is about to replace (no download, no weights file needed)."""
    return replace(cfg, weights=WEIGHTS_NONE)


def weights_file(cfg: ModelConfig) -> Path:
    """The file ``model.weights`` names (any value but none/imagenet), checked to exist."""
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.weights={cfg.weights!r} is neither {WEIGHTS_NONE!r}, {WEIGHTS_IMAGENET!r} "
            f"nor an existing file (looked for {path.absolute()}); give the path to a weights "
            f"file, or model.weights={WEIGHTS_NONE} to start from random weights."
        )
    return path


def pretrained_digest(cfg: ModelConfig) -> str:
    """The SHA-256 of the weights file ``model.weights`` names; '' for none and imagenet."""
    if cfg.weights in (WEIGHTS_NONE, WEIGHTS_IMAGENET):
        return ""
    return file_sha256(weights_file(cfg))


def error_summary(error: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message, for a ConfigError that wraps it.

    Keras' load errors end their first line with a colon and give the cause on the next
    ("Example error message for object ...:" then the shape mismatch), so that line is added,
    cut at a sentence end: the rest prints whole weight arrays.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) == 1 or not lines[0].endswith(":"):
        return lines[0]
    cause = lines[1][:limit]
    if len(lines[1]) > limit:
        cause = cause[: cause.rfind(". ") + 1] or cause + "..."
    return f"{lines[0]} {cause}"
