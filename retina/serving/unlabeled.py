"""Predictions for unlabeled scans: ``predict_scans(run_dir, input)``.

The scans go through the run's own preprocessing (the same cache code as training) and
the restored model; each is referred or not at an operating point stored in the
checkpoint. Files that cannot be read are listed separately, never silently dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from retina.checkpoint.read import read_operating_points
from retina.config import (
    OperatingPoint,
    PathsInOutputs,
    UncertaintyConfig,
    UncertaintyMethod,
    require_choice,
)
from retina.data.inputs import cached_inputs
from retina.data.privacy import record_paths, scan_pseudonym
from retina.errors import ConfigError
from retina.explanations.overlays import write_overlays
from retina.files import write_atomically
from retina.inference.outputs import FLIPS, probability_columns
from retina.inference.restore import load_run_model
from retina.models.grading import Grading, grading_of
from retina.quality.scoring import (
    DECISION_COLUMN,
    QUALITY_COLUMNS,
    apply_gate,
    is_no_field_problem,
    load_gate,
    no_field_rows,
    withheld,
)
from retina.run_dir import OVERLAYS_DIR, PREDICT_DIR, PREDICTIONS_FILE, UNREADABLE_FILE
from retina.uncertainty.referral import (
    REFER_COLUMN,
    ranking_column,
    read_policy,
    refer,
    uncertainty_columns,
)
from retina.uncertainty.sampling import sample_scans

log = logging.getLogger(__name__)
PREDICT_CHUNK = 4096  # scans scored and written at a time


def predict_scans(
    run_dir: str | Path,
    input_path: str | Path,
    checkpoint: str = "best",
    operating_point: str = "default",
    output_dir: str | Path | None = None,
    batch_size: int = 64,
    tta: bool = False,
    paths_in_outputs: str = PathsInOutputs.pseudonymise,
    uncertainty: UncertaintyConfig | None = None,
    explain: bool = False,
) -> Path:
    """Writes ``predictions.csv`` (one row per readable scan) and ``unreadable.csv`` into
    ``output_dir`` (default ``<run_dir>/predict``); returns the predictions' path.

    With ``uncertainty``, each scan also gets its uncertainty measures and, when the run
    has a ``referral.json`` chosen with the same method, ``refer_to_specialist``.

    With ``paths_in_outputs=pseudonymise`` (the default) both name each scan by a
    pseudonymous ``scan_id``; ``<data.cache_dir>/scan_paths.csv`` maps ids to files.

    With ``explain``, each scan's Grad-CAM overlay of the referable score goes to
    ``<output_dir>/overlays/<scan id>.png`` (its name in the ``overlay`` column).
    """
    operating_point = require_choice("operating_point", operating_point, OperatingPoint)
    private = require_choice("paths_in_outputs", paths_in_outputs, PathsInOutputs) != "keep"
    run_dir = Path(run_dir)
    cfg, model, path = load_run_model(run_dir, checkpoint)
    threshold = read_operating_points(path)[operating_point]
    root, rows, problems = cached_inputs(cfg, input_path)
    rows, problems = with_unseen_fields(rows, problems)
    gate, action = load_gate(model, cfg, path), str(cfg.quality.action)

    u = uncertainty or UncertaintyConfig()
    policy = read_policy(run_dir, u, _sample_count(u), path.name)
    calibration = policy.get("calibration") if policy else None

    def score(chunk: pd.DataFrame) -> pd.DataFrame:
        unseen = chunk[chunk["cache_path"] == ""]  # no field of view: ungradable, no image
        chunk = chunk[chunk["cache_path"] != ""]
        paths = chunk["cache_path"].tolist()
        samples = sample_scans([model], paths, str(u.method), u.samples, batch_size, tta)
        probabilities = samples.mean(axis=0)
        table = _prediction_rows(
            chunk, probabilities, grading_of(model), threshold, operating_point
        )
        table = pd.concat([table, uncertainty_columns(samples, calibration)], axis=1)
        if policy:
            column = ranking_column(str(u.measure), table)
            table[REFER_COLUMN] = refer(table[column], table["referred"], policy).astype(int)
        if explain:  # named by scan id whatever paths_in_outputs says: a file name is output
            ids = [scan_pseudonym(p, cfg.data.id_salt) for p in chunk["path"]]
            table["overlay"] = write_overlays(model, paths, ids, out_dir / OVERLAYS_DIR)
        table = apply_gate(table, gate.verdicts(model, paths, batch_size), action)
        table = pd.concat([table, gated_rows(unseen, action)], ignore_index=True)
        return _pseudonymised(table, cfg, root) if private else table

    out_dir = Path(output_dir) if output_dir else run_dir / PREDICT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    unusable = pd.DataFrame(problems, columns=["path", "reason"])
    unusable = _pseudonymised(unusable, cfg, root) if private else unusable
    write_atomically(out_dir / UNREADABLE_FILE, lambda file: unusable.to_csv(file, index=False))
    referred, held = _write_in_chunks(out_dir / PREDICTIONS_FILE, rows, score)
    log.info(
        "%d scans predicted with %s (operating point %s, threshold %.4f), %d referred; %d "
        "withheld by the quality gate (decision: %s); %d unreadable -> %s",
        len(rows),
        path.name,
        operating_point,
        threshold,
        referred,
        held,
        action,
        len(unusable),
        out_dir,
    )
    return out_dir / PREDICTIONS_FILE


def _sample_count(uncertainty: UncertaintyConfig) -> int:
    """Samples per scan of a method (ensembles are not predicted here: export averages)."""
    if uncertainty.method == UncertaintyMethod.ensemble:
        raise ConfigError(
            "predict scores one run; for an ensemble, evaluate it (python -m retina.evaluate "
            "uncertainty.method=ensemble ...) or predict with each member."
        )
    counts = {UncertaintyMethod.mc_dropout: uncertainty.samples, UncertaintyMethod.tta: len(FLIPS)}
    return counts.get(uncertainty.method, 1)


def _write_in_chunks(path: Path, rows: pd.DataFrame, score) -> tuple[int, int]:
    """``score``s the rows ``PREDICT_CHUNK`` at a time, appending each table to ``path`` as
    it comes (memory bounded by a chunk, whatever the number of scans; the file appears
    whole at the end); returns how many scans were referred and how many withheld."""
    referred = held = 0
    bar = tqdm(total=len(rows), desc="predicting", unit="scan", mininterval=1.0, leave=False)

    def write(file: Path) -> None:
        nonlocal referred, held
        for start in range(0, len(rows), PREDICT_CHUNK):
            table = score(rows.iloc[start : start + PREDICT_CHUNK])
            table.to_csv(file, mode="a", header=start == 0, index=False, float_format="%.6f")
            referred += int(table["referred"].sum())
            held += int(withheld(table).sum())
            bar.update(len(table))

    write_atomically(path, write)
    bar.close()
    return referred, held


def with_unseen_fields(rows: pd.DataFrame, problems: list[dict]) -> tuple[pd.DataFrame, list]:
    """The scans the preprocessing found no field of view in move from the problems to the
    rows (``cache_path`` ""): the gate calls them ungradable rather than unreadable."""
    unseen = [p["path"] for p in problems if is_no_field_problem(p["reason"])]
    rest = [p for p in problems if not is_no_field_problem(p["reason"])]
    added = pd.DataFrame({"path": unseen, "cache_path": [""] * len(unseen)})
    return pd.concat([rows, added], ignore_index=True), rest


def gated_rows(unseen: pd.DataFrame, action: str) -> pd.DataFrame:
    """The rows of scans without a field of view: their path, verdict and decision."""
    verdicts = no_field_rows(len(unseen))
    referred = pd.array([1 if action == "refer" else pd.NA] * len(unseen), "Int64")
    table = pd.DataFrame({"path": unseen["path"].to_numpy(), "referred": referred})
    table = pd.concat([table, verdicts[QUALITY_COLUMNS]], axis=1)
    table[DECISION_COLUMN] = action
    return table


def _prediction_rows(
    rows, probabilities, grading: Grading, threshold: float, operating_point: str
) -> pd.DataFrame:
    table = probability_columns(probabilities, grading)
    table.insert(0, "path", rows["path"].to_numpy())
    table["operating_point"] = operating_point
    table["threshold"] = threshold
    table["referred"] = (table["referable_probability"] >= threshold).astype(int)
    return table


def _pseudonymised(table: pd.DataFrame, cfg, root: Path) -> pd.DataFrame:
    """``table`` with its path column replaced by scan ids, which the lookup beside the
    cache maps back to the files."""
    ids = [scan_pseudonym(p, cfg.data.id_salt) for p in table["path"]]
    named = table.assign(path=ids).rename(columns={"path": "scan_id"})
    if len(table):
        record_paths(cfg.data.cache_dir, root, table.assign(scan_id=ids))
    return named
