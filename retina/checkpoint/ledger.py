"""The best-k ledger: which checkpoints ``best/`` keeps, ranked by a validation metric."""

from __future__ import annotations

import math

import numpy as np

from retina.config import BestMode, require_choice


def rank(values: np.ndarray, steps: np.ndarray, value: float, step: int, mode: str):
    """Offers (value, step) to the best-k ledger.

    Returns:
        (values, steps, admitted, evicted_step): the new ledger sorted best first (ties:
        newer first), whether the offer got a slot, and the step that lost its slot (-1 if
        none). A non-finite value never ranks.
    """
    require_choice("checkpoint.best_mode", mode, BestMode)
    if not math.isfinite(value):
        return values, steps, False, -1
    entries = [(v, s) for v, s in zip(values, steps, strict=True) if s >= 0] + [(value, step)]
    entries.sort(key=lambda e: (-e[0] if mode == "max" else e[0], -e[1]))
    kept, dropped = entries[: len(values)], entries[len(values) :]
    admitted = any(s == step for _, s in kept)
    padding = [(float("nan"), -1)] * (len(values) - len(kept))
    new_values = np.array([v for v, _ in kept + padding], np.float32)
    new_steps = np.array([s for _, s in kept + padding], np.int64)
    return new_values, new_steps, admitted, dropped[0][1] if dropped else -1
