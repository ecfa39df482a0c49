"""The head every model ends in: what ``model.head`` asks for, as ``head_*`` layers.

The optimizers tell head from backbone by the ``head_`` prefix (``training/optimizers.py``),
so every trainable layer built here carries it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from retina.config import ModelConfig
from retina.errors import ConfigError
from retina.icdr import NUM_GRADES

# model.head -> what its outputs are (retina.models.grading says what they mean). "referable"
# is ICDR grade >= 2, the line a screening programme refers at; the training loop derives
# its labels from grades.
HEADS = {
    "softmax": "model.num_classes logits, one per ICDR grade",
    "coral": "4 ordinal logits sharing one weight vector (P(grade > k))",
    "corn": "4 conditional ordinal logits (P(grade > k | grade > k - 1))",
    "regression": "1 output, the grade as a number",
    "referable": "2 logits, not referable and referable",
}


def num_outputs(cfg: ModelConfig) -> int:
    """How many outputs ``cfg.head`` needs; a ConfigError names ``model.head`` otherwise."""
    counts = {
        "softmax": cfg.num_classes,
        "coral": NUM_GRADES - 1,
        "corn": NUM_GRADES - 1,
        "regression": 1,
        "referable": 2,
    }
    if cfg.head not in counts:
        choices = ", ".join(f"{name} ({meaning})" for name, meaning in HEADS.items())
        raise ConfigError(
            f"model.head={cfg.head!r} is not a head this project builds; use {choices}."
        )
    return counts[cfg.head]


@keras.saving.register_keras_serializable(package="retina")
class CoralLogits(layers.Layer):
    """CORAL's output layer (Cao et al. 2020): one weight vector shared by the K - 1 binary
    tasks, a bias each, so logit_k = x . w + b_k; the biases start ordered as coral_pytorch
    starts them ((K - 1 - k) / (K - 1)), which makes the first predictions rank-consistent."""

    def __init__(self, tasks: int = NUM_GRADES - 1, **kwargs):
        super().__init__(**kwargs)
        self.tasks = tasks

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], 1), initializer="glorot_uniform"
        )
        start = np.arange(self.tasks, 0, -1, dtype="float32") / self.tasks
        self.bias = self.add_weight(
            name="bias", shape=(self.tasks,), initializer=keras.initializers.Constant(start)
        )

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.kernel) + self.bias

    def get_config(self):
        return {**super().get_config(), "tasks": self.tasks}


# The head's layers. head_pool turns the backbone's last feature map into a vector;
# Grad-CAM (retina/saliency.py) takes the feature map from its input (for avg_max pooling,
# from the input of head_avg_pool, which feeds it).
POOL_LAYER, AVG_POOL_LAYER, MAX_POOL_LAYER = "head_pool", "head_avg_pool", "head_max_pool"
NORM_LAYER, DROPOUT_LAYER, LOGITS_LAYER = "head_norm", "head_dropout", "head_logits"


def pool_feature_map(feature_map, pooling: str):
    """The head's pooling, by hand: what Grad-CAM applies in float32 to a feature map it
    holds on a tape (equal to the ``head_pool`` layers' output)."""
    average = tf.reduce_mean(feature_map, axis=[1, 2])
    if pooling == "avg":
        return average
    return tf.concat([average, tf.reduce_max(feature_map, axis=[1, 2])], axis=-1)


def pooling_of(model) -> str:
    """Which pooling a built model's head uses: ``avg`` or ``avg_max``."""
    pool = model.get_layer(POOL_LAYER)
    return "avg_max" if isinstance(pool, layers.Concatenate) else "avg"


def feature_map_of(model):
    """The last feature map: the input of the head's pooling, in the model's outer graph
    (for a keras.applications model, the nested backbone's output as the model calls it)."""
    first_pool = POOL_LAYER if pooling_of(model) == "avg" else AVG_POOL_LAYER
    return model.get_layer(first_pool).input


def pool_layers(feature_map, pooling: str):
    """The pooling as weightless layers, ``head_pool`` last: global average (``avg``,
    keras.applications' own), or global average and global max concatenated (``avg_max``,
    small_cnn)."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=POOL_LAYER)(feature_map)
    average = layers.GlobalAveragePooling2D(name=AVG_POOL_LAYER)(feature_map)
    maximum = layers.GlobalMaxPooling2D(name=MAX_POOL_LAYER)(feature_map)
    return layers.Concatenate(name=POOL_LAYER)([average, maximum])


def pooled_features_model(model):
    """The model cut at its pooled features, the input of the head's dropout: what MC
    dropout samples over and the quality gate measures distances on."""
    return keras.Model(model.inputs, model.get_layer(DROPOUT_LAYER).input)


def pooled_width(model) -> int:
    """How many pooled features ``pooled_features_model`` gives."""
    return int(model.get_layer(DROPOUT_LAYER).input.shape[-1])


def apply_head_norm(layer_norm, x):
    """RETFound's ``fc_norm``, twice (see ``build_head``)."""
    return layer_norm(layer_norm(x))


def logits_from_pooled(model):
    """The head after its pooling as a function, dropout off: ``head_norm`` (a ViT's) and
    ``head_logits``; what Grad-CAM applies to the pooled feature map it holds on a tape."""
    logits = model.get_layer(LOGITS_LAYER)
    if NORM_LAYER not in {layer.name for layer in model.layers}:
        return logits
    norm = model.get_layer(NORM_LAYER)
    return lambda pooled: logits(apply_head_norm(norm, pooled))


def build_head(feature_map, cfg: ModelConfig, pooling: str = "avg", norm: bool = False):
    """Pooling, a LayerNorm when ``norm`` (a ViT's: RETFound's ``fc_norm``, applied twice
    as RETFound's code applies it on the timm it pins, once in its ``forward_features`` and
    again in timm's ``forward_head``), dropout, then the output layer ``cfg.head`` asks for
    on the backbone's last ``feature_map``; returns float32 outputs."""
    x = pool_layers(feature_map, pooling)
    if norm:
        x = apply_head_norm(layers.LayerNormalization(epsilon=1e-6, name=NORM_LAYER), x)
    x = layers.Dropout(cfg.dropout, name=DROPOUT_LAYER)(x)
    # float32 outputs: under mixed precision a float16 softmax loses the small probabilities.
    if cfg.head == "coral":
        return CoralLogits(dtype="float32", name=LOGITS_LAYER)(x)
    return layers.Dense(num_outputs(cfg), dtype="float32", name=LOGITS_LAYER)(x)
