"""Every fixed-choice key of a run config checked at start-up, before any data is read: a
typo stops the run naming the key and the valid choices."""

from __future__ import annotations

import numpy as np

from retina.config import RunConfig, check_choices, require_choice
from retina.data.sources import LAYOUTS
from retina.models import WEIGHTS_IMAGENET, WEIGHTS_NONE, available_models
from retina.models.heads import num_outputs
from retina.models.registry import weights_file
from retina.training.losses import class_weights


def check_run_choices(cfg: RunConfig, resuming: bool = False) -> None:
    """Raises ConfigError for the first key whose value is not one of its choices: every
    ``StrEnum`` field, then the keys whose choices live in registries (model.name,
    data.layout), model.weights (none, imagenet or a file; a resumed run takes every weight
    from its checkpoint, so the file may be gone) and loss.class_weights."""
    check_choices(cfg)
    require_choice("model.name", cfg.model.name, available_models())
    require_choice("data.layout", cfg.data.layout, sorted(LAYOUTS))
    if cfg.model.weights not in (WEIGHTS_NONE, WEIGHTS_IMAGENET) and not resuming:
        weights_file(cfg.model)
    class_weights(cfg.loss.class_weights, np.zeros(0, np.int64), num_outputs(cfg.model))
