"""A small CNN that trains on two CPU cores in minutes: the default model."""

from __future__ import annotations

import keras
from keras import layers

from retina.config import ModelConfig
from retina.errors import ConfigError
from retina.models.heads import build_head
from retina.models.registry import (
    WEIGHTS_IMAGENET,
    WEIGHTS_NONE,
    error_summary,
    register_model,
    weights_file,
)

# Keras' default 0.99 lags by hundreds of steps: a run of a few hundred steps would
# validate with statistics from its first epochs.
BN_MOMENTUM = 0.9


def _conv_block(x, width: int, name: str):
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


@register_model("small_cnn")
def small_cnn(cfg: ModelConfig, image_size: int) -> keras.Model:
    """Strided stem, one conv block per width, then average+max pooling.

    Max pooling beside average pooling lets a handful of small lesions (microaneurysms,
    exudates) move the logits; averaging alone dilutes them over the whole retina.
    """
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    x = layers.Conv2D(
        cfg.widths[0] // 2 or 8, 5, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for index, width in enumerate(cfg.widths):
        x = _conv_block(x, width, f"block{index + 1}")
    model = keras.Model(inputs, build_head(x, cfg, pooling="avg_max"), name="small_cnn")
    _load_weights(model, cfg)
    return model


def _load_weights(model: keras.Model, cfg: ModelConfig) -> None:
    """Honours ``model.weights``: none, or a whole-model ``.weights.h5`` file."""
    if cfg.weights == WEIGHTS_NONE:
        return
    if cfg.weights == WEIGHTS_IMAGENET:
        raise ConfigError(
            f"model.weights={WEIGHTS_IMAGENET} but model.name=small_cnn has no ImageNet weights; "
            f"use model.weights={WEIGHTS_NONE}, a small_cnn .weights.h5 file, or an ImageNet "
            "backbone such as model.name=efficientnet_b0."
        )
    path = weights_file(cfg)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as error:
        raise ConfigError(
            f"model.weights={cfg.weights!r} could not be loaded into small_cnn "
            f"({error_summary(error)}); give a .weights.h5 file saved from a small_cnn with the "
            "same model.widths, model.head and model.num_classes (a run's checkpoint goes to "
            "checkpoint.init_from instead)."
        ) from error
