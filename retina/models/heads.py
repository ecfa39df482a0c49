"""The classifier head every model ends in: what ``model.head`` asks for, as ``head_*`` layers.

The optimizers tell head from backbone by the ``head_`` prefix (``training/optimizers.py``),
so every trainable layer built here carries it.
"""

from __future__ import annotations

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


def build_head(features, cfg: ModelConfig):
    """Dropout then the logits layer on pooled ``features``; returns float32 logits."""
    x = layers.Dropout(cfg.dropout, name="head_dropout")(features)
    # float32 logits: under mixed precision a float16 softmax loses the small probabilities.
    return layers.Dense(num_outputs(cfg), dtype="float32", name="head_logits")(x)
