"""Models by name: ``build_model(cfg.model, image_size)``.

    registry       the registry, ``build_model`` and the ``model.weights`` helpers
    heads          the classifier head every model ends in (``head_*`` layers)
    small_cnn      the default model
    applications   keras.applications backbones (ResNet50, EfficientNet B0-B4, InceptionV3)
    vit            Vision Transformers in RETFound's layout (ViT-B/16, ViT-L/16, a small one)

Importing this package registers every model.
"""

from retina.models import applications, small_cnn, vit  # noqa: F401  (each registers itself)
from retina.models.registry import (
    WEIGHTS_IMAGENET,
    WEIGHTS_NONE,
    available_models,
    build_model,
    pretrained_digest,
    register_model,
    without_pretrained,
)

__all__ = [
    "WEIGHTS_IMAGENET",
    "WEIGHTS_NONE",
    "available_models",
    "build_model",
    "pretrained_digest",
    "register_model",
    "without_pretrained",
]
