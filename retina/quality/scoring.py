"""The gate over cached scans: the model's pooled features and the image measures of each
scan, the verdict of every scan as a table, and what a withheld scan's row says."""

from __future__ import annotations

import logging
import weakref

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from retina.checkpoint.read import read_quality
from retina.config import QualityConfig
from retina.data.pipeline import make_eval_dataset
from retina.models.heads import pooled_features_model, pooled_width
from retina.quality.gate import (
    NO_FIELD,
    UNGRADABLE,
    VERDICTS,
    GateParams,
    gate_batch,
    reasons_of,
    rule_settings,
    unfitted_params,
)
from retina.quality.measures import MEASURES, image_measures

log = logging.getLogger(__name__)
QUALITY_COLUMNS = ["quality", "quality_reasons", "quality_score", "fundus_distance"]
DECISION_COLUMN = "decision"  # refer | no_refer | retake


_SIGNAL_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def make_signal_step(model: keras.Model):
    """``images -> (features, measures)`` as one compiled function, made once per model
    (training fits the gate after every epoch)."""
    if model not in _SIGNAL_STEPS:
        features_of = pooled_features_model(model)

        @tf.function
        def step(images):
            features = tf.cast(features_of(images, training=False), tf.float32)
            return features, image_measures(images)

        _SIGNAL_STEPS[model] = step
    return _SIGNAL_STEPS[model]


def scan_signals(model: keras.Model, cache_paths: list[str], batch_size: int = 64) -> dict:
    """``features`` (n, width) and ``measures`` (n, measures) of cached scans, in order."""
    step = make_signal_step(model)
    features, measures = [], []
    for images, _ in make_eval_dataset(list(cache_paths), [0] * len(cache_paths), batch_size):
        batch_features, batch_measures = step(images)
        features.append(batch_features.numpy())
        measures.append(batch_measures.numpy())
    if not features:
        width = pooled_width(model)
        return {
            "features": np.zeros((0, width), np.float32),
            "measures": np.zeros((0, len(MEASURES))),
        }
    return {"features": np.concatenate(features), "measures": np.concatenate(measures)}


class Gate:
    """A checkpoint's gate: its fitted state (or the rules alone) and the rules' settings."""

    def __init__(self, params: GateParams, cfg: QualityConfig, image_size: int):
        self.params = params
        self.cfg = cfg
        self.rules = rule_settings(cfg, image_size)
        self.constants = {k: tf.constant(v) for k, v in params.as_dict().items()}
        self._judges = weakref.WeakKeyDictionary()  # model -> compiled images -> verdicts

    @property
    def fitted(self) -> bool:
        return bool(self.params.fitted > 0)

    def batch(self, features: tf.Tensor, measures: tf.Tensor) -> dict:
        return gate_batch(self.constants, self.rules, features, measures)

    def verdicts(self, model: keras.Model, cache_paths: list[str], batch_size: int = 64):
        """One row per cached scan: QUALITY_COLUMNS plus ``quality_flags``."""
        if model not in self._judges:  # traced once per model, not once per call
            step = make_signal_step(model)
            self._judges[model] = tf.function(lambda images: self.batch(*step(images)))
        judge, parts = self._judges[model], []
        for images, _ in make_eval_dataset(list(cache_paths), [0] * len(cache_paths), batch_size):
            parts.append({k: v.numpy() for k, v in judge(images).items()})
        return verdict_table(parts)


def verdict_table(parts: list[dict]) -> pd.DataFrame:
    """``gate_batch``'s outputs of several batches as one table of named verdicts."""
    if not parts:
        return pd.DataFrame(columns=[*QUALITY_COLUMNS, "quality_flags"])
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    verdicts = [VERDICTS[int(code)] for code in joined["quality"]]
    flags = joined["quality_flags"].astype(int)
    return pd.DataFrame(
        {
            "quality": verdicts,
            "quality_reasons": [reasons_of(f, v) for f, v in zip(flags, verdicts, strict=True)],
            "quality_score": joined["quality_score"],
            "fundus_distance": joined["fundus_distance"],
            "quality_flags": flags,
        }
    )


def no_field_rows(count: int) -> pd.DataFrame:
    """The verdict of scans the preprocessing found no field of view in (never cached)."""
    return pd.DataFrame(
        {
            "quality": [UNGRADABLE] * count,
            "quality_reasons": ["no field of view"] * count,
            "quality_score": [np.nan] * count,
            "fundus_distance": [np.nan] * count,
            "quality_flags": [NO_FIELD] * count,
        }
    )


def is_no_field_problem(reason: str) -> bool:
    """Whether an ingest problem is the preprocessing's "no field of view found"."""
    return str(reason).startswith("no field of view")


def withheld(table: pd.DataFrame) -> pd.Series:
    """The rows the gate withholds (any verdict but gradable)."""
    return table["quality"] != "gradable"


GRADED_PREFIXES = ("prob_", "predicted_grade", "referable", "referred", "refer_to", "overlay")
GRADED_PARTS = ("entropy", "mutual_information")


def graded_columns(table: pd.DataFrame) -> list[str]:
    """The columns of a prediction table that grade a scan (probabilities, grade call,
    referral decisions, uncertainty, overlays): empty for a withheld scan."""
    return [
        column
        for column in table
        if column.startswith(GRADED_PREFIXES) or any(part in column for part in GRADED_PARTS)
    ]


def apply_gate(
    table: pd.DataFrame, verdicts: pd.DataFrame, action: str, referred: str = "referred"
) -> pd.DataFrame:
    """``table`` (one row per scan) with the verdict columns and the ``decision``: the
    grade's (``refer`` or ``no_refer``, by the ``referred`` column) for a gradable scan,
    ``action`` (``retake`` or ``refer``) for a withheld one, whose graded columns are
    emptied and whose ``referred*`` columns say 1 only when the action refers."""
    table, verdicts = table.reset_index(drop=True), verdicts.reset_index(drop=True)
    held = withheld(verdicts).to_numpy()
    out = pd.concat([table, verdicts[QUALITY_COLUMNS]], axis=1)
    for column in graded_columns(table):
        kind = out[column].dtype.kind
        if kind in "iub":
            out[column] = out[column].astype("Int64")
        elif kind == "f":
            out[column] = out[column].astype("Float64")
        out.loc[held, column] = pd.NA
        if column.startswith("referred") and action == "refer":
            out.loc[held, column] = 1
    refers = table[referred].fillna(0).astype(int).to_numpy() == 1
    out[DECISION_COLUMN] = np.where(held, action, np.where(refers, "refer", "no_refer"))
    return out


def load_gate(model: keras.Model, cfg, path) -> Gate:
    """The gate ``path`` (a checkpoint) was saved with; the rules alone (logged) when it
    holds none."""
    values = read_quality(path)
    if values is None:
        log.info(
            "%s holds no quality gate (saved before it, or with quality.enabled=false): "
            "the rules alone decide gradable or ungradable, nothing is called not_fundus.",
            path,
        )
        params = unfitted_params(pooled_width(model), cfg.quality)
    else:
        params = GateParams.from_dict(values)
    return Gate(params, cfg.quality, cfg.preprocess.image_size)
