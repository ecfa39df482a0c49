"""ImageNet backbones from ``keras.applications`` behind this project's input and head.

Each model is: the uint8 ``image`` input -> float -> the family's own input scaling -> ONE
nested layer named ``backbone`` (include_top=False, no pooling: its last feature map comes
out, for Grad-CAM) -> ``head_pool`` (global average) -> ``head_dropout`` -> ``head_logits``
(float32). Freezing the backbone is setting that one layer's ``trainable``.

Checkpoints written before ``head_pool`` existed (the backbone pooled inside, with
``pooling="avg"``) still restore: ``retina.checkpoint.read`` reads them through a view with
their operation numbering; the computation is the same.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
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

# keras.utils.get_file uses urlretrieve, which has no timeout: where a firewall drops packets
# instead of refusing them, a download would wait minutes for TCP to give up, or for ever on a
# stalled read. This bounds each socket operation, not the whole download.
DOWNLOAD_TIMEOUT_S = 30.0

# ImageNet channel means in BGR order, as keras.applications.imagenet_utils "caffe" mode has them.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# ImageNet RGB statistics in 0..1 units, as EfficientNet's ImageNet training used them.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def _caffe(x):
    """RGB 0..255 -> BGR minus the ImageNet means, unscaled (resnet50.preprocess_input)."""
    x = keras.ops.flip(x, axis=-1)
    return layers.Rescaling(1.0, offset=[-mean for mean in CAFFE_MEAN_BGR], name="caffe_mean")(x)


def _minus_one_to_one(x):
    """0..255 -> [-1, 1] (inception_v3.preprocess_input, the "tf" mode)."""
    return layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(x)


def _unchanged(x):
    """EfficientNet rescales and normalises 0..255 itself, inside the backbone."""
    return x


def _standardise_efficientnet_input(backbone: keras.Model) -> None:
    """Makes every EfficientNet compute ``(x / 255 - mean) / std`` with the ImageNet statistics,
    however its weights were obtained.

    Keras' ImageNet files store the std where Normalization expects a variance, and Keras adds
    a compensating Rescaling only for weights="imagenet" (tensorflow#49930): the same file given
    as a path would divide by sqrt(std), and a random start uses mean 0, variance 1. The layer
    also computes with a copy of its variables made in ``finalize_state``, which a checkpoint
    restore does not refresh; so the values are fixed here, identical for every build, and a
    checkpoint from any build restores correctly into any other.
    """
    index, normalization = next(
        (i, layer)
        for i, layer in enumerate(backbone.layers)
        if isinstance(layer, layers.Normalization)
    )
    normalization.adapt_mean.assign(IMAGENET_MEAN_RGB)
    normalization.adapt_variance.assign(np.square(IMAGENET_STD_RGB))
    normalization.finalize_state()
    compensation = backbone.layers[index + 1]
    if isinstance(compensation, layers.Rescaling):  # only there for weights="imagenet"
        compensation.scale = 1.0


@dataclass(frozen=True)
class Family:
    """How to build and feed one keras.applications backbone."""

    constructor: Callable[..., keras.Model]
    preprocess: Callable
    min_size: int  # keras.applications refuses smaller inputs
    # Called on every freshly built backbone, whatever model.weights says.
    finish: Callable[[keras.Model], None] | None = None


def _efficientnet(constructor) -> Family:
    return Family(constructor, _unchanged, 32, finish=_standardise_efficientnet_input)


BACKBONES: dict[str, Family] = {
    "resnet50": Family(keras.applications.ResNet50, _caffe, 32),
    "efficientnet_b0": _efficientnet(keras.applications.EfficientNetB0),
    "efficientnet_b1": _efficientnet(keras.applications.EfficientNetB1),
    "efficientnet_b2": _efficientnet(keras.applications.EfficientNetB2),
    "efficientnet_b3": _efficientnet(keras.applications.EfficientNetB3),
    "efficientnet_b4": _efficientnet(keras.applications.EfficientNetB4),
    "inception_v3": Family(keras.applications.InceptionV3, _minus_one_to_one, 75),
}


def build_application(name: str, cfg: ModelConfig, image_size: int) -> keras.Model:
    """Builds ``BACKBONES[name]`` with the head ``cfg.head`` asks for."""
    family = BACKBONES[name]
    if image_size < family.min_size:
        raise ConfigError(
            f"model.name={name} needs images of at least {family.min_size} px; "
            f"preprocess.image_size={image_size}. Raise preprocess.image_size or pick a model "
            "that takes small inputs (small_cnn)."
        )
    backbone = _build_backbone(name, family, cfg, image_size)
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = family.preprocess(keras.ops.cast(inputs, "float32"))
    return keras.Model(inputs, build_head(backbone(x), cfg), name=name)


def _build_backbone(name: str, family: Family, cfg: ModelConfig, image_size: int) -> keras.Model:
    options = dict(include_top=False, pooling=None, input_shape=(image_size, image_size, 3))
    if cfg.weights == WEIGHTS_NONE:
        backbone = family.constructor(weights=None, **options)
    elif cfg.weights == WEIGHTS_IMAGENET:
        backbone = _imagenet_backbone(name, family, options)
    else:
        backbone = _backbone_from_file(name, family, cfg, options)
    if family.finish is not None:
        family.finish(backbone)
    # Renamed afterwards, not passed as name=: EfficientNet builds its download URL from the name.
    backbone.name = "backbone"
    return backbone


def _imagenet_backbone(name: str, family: Family, options: dict) -> keras.Model:
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return family.constructor(weights="imagenet", **options)
    except Exception as error:  # get_file raises a bare Exception for a failed fetch
        url = re.search(r"https?://\S+?\.h5", str(error))
        file = f"{url.group(0).rsplit('/', 1)[-1]} " if url else "the weights file "
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        raise ConfigError(
            f"model.name={name} with model.weights={WEIGHTS_IMAGENET}: the ImageNet weights need "
            f"a download from the Keras storage (storage.googleapis.com), which failed: "
            f"{error_summary(error)}. Without network, put {file}into {cache}/ ahead of time "
            "($KERAS_HOME/models, ~/.keras/models by default), or set model.weights=<path to a "
            f".h5/.weights.h5 backbone weights file>, or model.weights={WEIGHTS_NONE} to start "
            "from random weights."
        ) from error


def _backbone_from_file(name: str, family: Family, cfg: ModelConfig, options: dict):
    path = weights_file(cfg)
    try:
        return family.constructor(weights=str(path), **options)
    except (ValueError, OSError, KeyError) as error:
        raise ConfigError(
            f"model.weights={cfg.weights!r} could not be loaded into the {name} backbone "
            f"({error_summary(error)}); give keras.applications' {name} weights without the top "
            "(the *_notop.h5 file model.weights=imagenet downloads), or a .weights.h5 saved from "
            "this model's 'backbone' layer."
        ) from error


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    if previous is None:  # a timeout the user set already is theirs to keep
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _register(name: str) -> None:
    def builder(cfg: ModelConfig, image_size: int) -> keras.Model:
        return build_application(name, cfg, image_size)

    builder.__doc__ = f"keras.applications {name} backbone with this project's input and head."
    register_model(name)(builder)


for _name in BACKBONES:
    _register(_name)
