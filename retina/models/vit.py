"""Vision Transformers in RETFound's layout (Zhou et al., Nature 2023; its ``models_vit``
on timm's ``VisionTransformer``): ViT-B/16, ViT-L/16 and a small one for CPUs and tests.

uint8 image -> ImageNet standardisation -> ``patch_embed`` (a p x p convolution, stride p)
-> ``tokens``: the class token in front, the position embedding added -> ``block_<i>``
(pre-norm: x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)), GELU, drop path on
both branches) -> the patch tokens as a g x g grid (``patch_grid``: the feature map
Grad-CAM reads) -> ``head_pool`` (their mean, RETFound's ``--global_pool``) ->
``head_norm`` (RETFound's ``fc_norm``, applied twice as RETFound's code does on the timm
0.9 it pins) -> ``head_dropout`` -> ``head_logits``.

Weights from RETFound's files: ``retina.models.foreign_weights``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
from keras import layers

from retina.config import ModelConfig
from retina.errors import ConfigError
from retina.models.applications import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from retina.models.foreign_weights import load_foreign_weights
from retina.models.heads import build_head
from retina.models.registry import WEIGHTS_IMAGENET, WEIGHTS_NONE, register_model, weights_file

log = logging.getLogger(__name__)

LAYER_NORM_EPSILON = 1e-6  # RETFound's norm_layer=partial(nn.LayerNorm, eps=1e-6)
MLP_RATIO = 4


@dataclass(frozen=True)
class ViTShape:
    patch_size: int
    width: int
    depth: int
    heads: int


# The fixed shapes; ``model.name=vit`` takes its shape from the model.* keys.
SHAPES = {
    "vit_base_patch16": ViTShape(16, 768, 12, 12),
    "vit_large_patch16": ViTShape(16, 1024, 24, 16),  # RETFound's
}
SHAPE_KEYS = ("patch_size", "width", "depth", "heads")
UNSET_SHAPE = ViTShape(*(ModelConfig.__dataclass_fields__[key].default for key in SHAPE_KEYS))


@keras.saving.register_keras_serializable(package="retina")
class DropPath(layers.Layer):
    """Stochastic depth: in training, a residual branch is dropped for a whole sample with
    probability ``rate`` and the kept ones scaled by 1 / (1 - rate) (timm's ``DropPath``).
    Its seed generator is a variable, so a checkpoint carries where it stood."""

    def __init__(self, rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed_generator = keras.random.SeedGenerator()  # seeded by the run's seed

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        shape = (keras.ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        draw = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        keep = keras.ops.cast(draw >= self.rate, inputs.dtype)
        return inputs * keep / (1.0 - self.rate)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@keras.saving.register_keras_serializable(package="retina")
class Tokens(layers.Layer):
    """The class token in front of the patch tokens, and the position embedding added
    (RETFound's ``cls_token`` and ``pos_embed``, one row per token)."""

    def build(self, input_shape):
        tokens, width = input_shape[1], input_shape[2]
        initializer = keras.initializers.TruncatedNormal(stddev=0.02)
        self.cls_token = self.add_weight(
            name="cls_token", shape=(1, 1, width), initializer=initializer
        )
        self.pos_embed = self.add_weight(
            name="pos_embed", shape=(1, tokens + 1, width), initializer=initializer
        )

    def call(self, patches):
        cls = keras.ops.broadcast_to(
            keras.ops.cast(self.cls_token, patches.dtype),
            (keras.ops.shape(patches)[0], 1, patches.shape[-1]),
        )
        return keras.ops.concatenate([cls, patches], axis=1) + keras.ops.cast(
            self.pos_embed, patches.dtype
        )


@keras.saving.register_keras_serializable(package="retina")
class TransformerBlock(layers.Layer):
    """timm's ``Block``: x + DropPath(Attention(LayerNorm(x))), then
    x + DropPath(MLP(LayerNorm(x))), the MLP ``MLP_RATIO`` times wider, exact GELU."""

    def __init__(self, width: int, heads: int, drop_path: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.drop_path = width, heads, drop_path
        self.norm1 = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm1")
        self.attn = layers.MultiHeadAttention(heads, width // heads, name="attn")
        self.norm2 = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm2")
        self.fc1 = layers.Dense(width * MLP_RATIO, name="fc1")
        self.fc2 = layers.Dense(width, name="fc2")
        self.drop1 = DropPath(drop_path, name="drop_path1")
        self.drop2 = DropPath(drop_path, name="drop_path2")

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attn.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.width * MLP_RATIO))

    def call(self, x, training=None):
        normed = self.norm1(x)
        x = x + self.drop1(self.attn(normed, normed, training=training), training=training)
        hidden = keras.activations.gelu(self.fc1(self.norm2(x)), approximate=False)
        return x + self.drop2(self.fc2(hidden), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "heads": self.heads,
            "drop_path": self.drop_path,
        }


def vit_shape(cfg: ModelConfig) -> ViTShape:
    """The named model's shape; for ``vit``, the model.* keys'. A fixed shape whose keys
    were changed from its own (or, left all at ModelConfig's defaults, from those) is
    refused: RETFound's weights fit only their own."""
    asked = ViTShape(*(getattr(cfg, key) for key in SHAPE_KEYS))
    fixed = SHAPES.get(cfg.name)
    if fixed is not None and asked == UNSET_SHAPE:  # a ModelConfig built in code
        return fixed
    if fixed is not None and fixed != asked:
        differing = [
            f"model.{key}={getattr(asked, key)} (it has {getattr(fixed, key)})"
            for key in SHAPE_KEYS
            if getattr(asked, key) != getattr(fixed, key)
        ]
        raise ConfigError(
            f"model.name={cfg.name} has a fixed shape, but {', '.join(differing)}; use "
            "model=vit for another shape."
        )
    if asked.width % asked.heads:
        raise ConfigError(f"model.width={asked.width} must divide into model.heads={asked.heads}.")
    return asked


def build_vit(cfg: ModelConfig, image_size: int) -> keras.Model:
    if cfg.weights == WEIGHTS_IMAGENET:
        raise ConfigError(
            f"model.name={cfg.name} has no ImageNet weights here; give RETFound's file "
            f"(model.weights=<path to RETFound_cfp_weights.pth>) or model.weights={WEIGHTS_NONE}."
        )
    shape = vit_shape(cfg)
    if image_size % shape.patch_size:
        raise ConfigError(
            f"{cfg.name} cuts images into {shape.patch_size} px patches; preprocess.image_size="
            f"{image_size} is not a multiple (224 is RETFound's)."
        )
    grid = image_size // shape.patch_size
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    scale = [1 / (255 * std) for std in IMAGENET_STD_RGB]
    offset = [-mean / std for mean, std in zip(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, strict=True)]
    x = layers.Rescaling(scale, offset=offset, name="imagenet_standardise")(
        keras.ops.cast(inputs, "float32")
    )
    x = layers.Conv2D(shape.width, shape.patch_size, strides=shape.patch_size, name="patch_embed")(
        x
    )
    x = Tokens(name="tokens")(layers.Reshape((grid * grid, shape.width), name="patch_tokens")(x))
    for i in range(shape.depth):
        rate = cfg.drop_path * i / max(shape.depth - 1, 1)  # timm's linear rule
        x = TransformerBlock(shape.width, shape.heads, rate, name=f"block_{i}")(x)
    feature_map = layers.Reshape((grid, grid, shape.width), name="patch_grid")(x[:, 1:])
    model = keras.Model(inputs, build_head(feature_map, cfg, norm=True), name=cfg.name)
    if cfg.weights != WEIGHTS_NONE:
        load_foreign_weights(model, weights_file(cfg))
        log.info("Loaded %s into %s.", cfg.weights, cfg.name)
    return model


for _name in ("vit", *SHAPES):
    register_model(_name)(build_vit)
