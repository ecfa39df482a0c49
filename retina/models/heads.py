"""The classifier head every model ends in: what ``model.head`` asks for, as ``head_*`` layers.

The optimizers tell head from backbone by the ``head_`` prefix (``training/optimizers.py``),
so every trainable layer built here carries it.
"""

from __future__ import annotations

import tensorflow as tf
from keras import layers

from retina.config import ModelConfig
from retina.errors import ConfigError

# model.head -> what the logits mean. "referable" is ICDR grade >= 2 (moderate NPDR or worse),
# the line a screening programme refers at; the training loop derives its labels from grades.
HEADS = {
    "grades": "model.num_classes logits, one per ICDR grade",
    "referable": "2 logits, not referable and referable",
}


def num_outputs(cfg: ModelConfig) -> int:
    """How many logits ``cfg.head`` needs; a ConfigError names ``model.head`` otherwise."""
    if cfg.head == "grades":
        return cfg.num_classes
    if cfg.head == "referable":
        return 2
    choices = ", ".join(f"{name} ({meaning})" for name, meaning in HEADS.items())
    raise ConfigError(f"model.head={cfg.head!r} is not a head this project builds; use {choices}.")


# The head's first layer: the backbone's last feature map goes in, a vector comes out.
# Grad-CAM (retina/saliency.py) takes its feature map from this layer's input.
POOL_LAYER = "head_pool"
# model.head pooling -> what it computes (no weights either way).
POOLINGS = {
    "avg": "global average pooling (keras.applications' own)",
    "avg_max": "global average and global max pooling, concatenated (small_cnn)",
}


def pool_feature_map(feature_map, pooling: str):
    """The head's pooling, by hand: what Grad-CAM applies in float32 to a feature map it
    holds on a tape (equal to the ``head_pool`` layers' output)."""
    average = tf.reduce_mean(feature_map, axis=[1, 2])
    if pooling == "avg":
        return average
    return tf.concat([average, tf.reduce_max(feature_map, axis=[1, 2])], axis=-1)


def pooling_of(model) -> str:
    """Which of ``POOLINGS`` a built model's head uses."""
    pool = model.get_layer(POOL_LAYER)
    return "avg_max" if isinstance(pool, layers.Concatenate) else "avg"


def pool_layers(feature_map, pooling: str):
    """The pooling as layers (``head_pool`` last; the feature map is its, or for avg_max its
    inputs', input)."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=POOL_LAYER)(feature_map)
    average = layers.GlobalAveragePooling2D(name="head_avg_pool")(feature_map)
    maximum = layers.GlobalMaxPooling2D(name="head_max_pool")(feature_map)
    return layers.Concatenate(name=POOL_LAYER)([average, maximum])


def build_head(feature_map, cfg: ModelConfig, pooling: str = "avg"):
    """Pooling, dropout, then the logits layer on the backbone's last ``feature_map``;
    returns float32 logits."""
    x = layers.Dropout(cfg.dropout, name="head_dropout")(pool_layers(feature_map, pooling))
    # float32 logits: under mixed precision a float16 softmax loses the small probabilities.
    return layers.Dense(num_outputs(cfg), dtype="float32", name="head_logits")(x)
