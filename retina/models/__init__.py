"""Models by name: ``build_model(cfg.model, image_size)``.

    registry       the registry, ``build_model`` and the ``model.weights`` helpers
    heads          the classifier head every model ends in (``head_*`` layers)
    small_cnn      the default model
    applications   keras.applications backbones (ResNet50, EfficientNet B0-B4, InceptionV3)

Importing this package registers every model.
"""

from retina.models import applications, small_cnn  # noqa: F401  (each registers itself)
from retina.models.registry import (
    WEIGHTS_IMAGENET,
    WEIGHTS_NONE,
    available_models,
    build_model,
    register_model,
    without_pretrained,
)

__all__ = [
    "WEIGHTS_IMAGENET",
    "WEIGHTS_NONE",
    "available_models",
    "build_model",
    "register_model",
    "without_pretrained",
]
