"""A trained run's model rebuilt from its ``config.yaml`` and restored from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import keras

from retina.checkpoint.read import find_checkpoint, read_grading, restore_weights
from retina.config import RunConfig
from retina.models import build_model, without_pretrained
from retina.models.grading import attach_grading
from retina.run_dir import load_run_config


def load_run_model(run_dir: str | Path, checkpoint: str) -> tuple[RunConfig, keras.Model, Path]:
    """The run's config, its model rebuilt in float32 with the checkpoint's weights (verified:
    a damaged or mismatching checkpoint is refused) and grading, and the checkpoint's path."""
    cfg = load_run_config(run_dir)
    path = find_checkpoint(run_dir, checkpoint)
    # Float32 whatever the training precision: variables are float32 either way, and
    # full-precision logits make repeated evaluations identical.
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        model = build_model(without_pretrained(cfg.model), cfg.preprocess.image_size)
        restore_weights(model, path)
        attach_grading(model, read_grading(path, cfg.model.head))
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    return cfg, model, path
