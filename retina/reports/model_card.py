"""``model_card.md`` beside an exported model: the sections of Mitchell et al. (2019), "Model
Cards for Model Reporting": details, intended use, out-of-scope use, factors, data, metrics
with confidence intervals, subgroup results, caveats.

Figures come from the run's own evaluation of the exported checkpoint on its test split
(``<run_dir>/eval/<checkpoint>-test/metrics.json``); where there is none the card says so and
how to make one, rather than leaving a number out silently.
"""

from __future__ import annotations

from pathlib import Path

from retina.checkpoint.read import read_grading
from retina.config import RunConfig
from retina.files import read_json, write_atomically
from retina.icdr import REFERABLE_MIN_GRADE
from retina.models.grading import Grading, grading_record
from retina.reports.provenance import describe_initial_weights, study_facts
from retina.reports.quality_gate import quality_gate_section
from retina.reports.report_html import INTENDED_USE, split_table
from retina.reports.report_md import grade_call, subgroup_section
from retina.reports.tables import format_interval, markdown_table
from retina.run_dir import METRICS_FILE, MODEL_CARD_FILE, evaluation_dir


def write_model_card(out_dir: Path, run_dir: Path, cfg: RunConfig, checkpoint: Path) -> Path:
    """Writes ``<out_dir>/model_card.md``; returns its path."""
    facts = study_facts(run_dir, cfg, checkpoint)
    metrics_path = evaluation_dir(run_dir, checkpoint.name, "test") / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.is_file() else None
    intended, out_of_scope = INTENDED_USE.format(grade=REFERABLE_MIN_GRADE).split("\n\n")
    sections = [
        f"# Model card: {cfg.model.name}, {checkpoint.name}",
        "## Model details\n\n" + _details(cfg, facts, read_grading(checkpoint, cfg.model.head)),
        "## Intended use\n\n" + intended,
        "## Out-of-scope use\n\n" + out_of_scope.removeprefix("Out of scope: ").capitalize(),
        "## Factors\n\nResults are reported per site, eye, sex, age band and image quality "
        "(the subgroups below), the factors along which screening performance is known to vary.",
        "## Data\n\n" + _data(facts),
        "## Metrics\n\n" + _metrics(metrics, checkpoint.name),
        _quality_gate(metrics),
        _subgroups(metrics),
        "## Caveats and recommendations\n\n" + _caveats(facts),
    ]
    return write_atomically(Path(out_dir) / MODEL_CARD_FILE, "\n\n".join(sections) + "\n")


def _details(cfg: RunConfig, facts: dict, grading: Grading) -> str:
    r = facts["reproducibility"]
    return "\n".join(
        [
            f"- Architecture: {cfg.model.name}, {cfg.model.head} head, "
            f"{cfg.preprocess.image_size}-pixel preprocessed RGB input (uint8).",
            "- Initial weights (pretraining): "
            f"{describe_initial_weights(facts['model']['initial_weights'])}.",
            f"- Grade call: {grade_call(grading_record(grading))}.",
            f"- Checkpoint: {r['checkpoint']}, weights SHA-256 {r['checkpoint_sha256']}.",
            f"- Config hash: {r['config_hash']}; data manifest hash: {r['manifest_hash']}.",
            f"- Code: {r['code_version']}; trained with "
            + ", ".join(f"{k} {v}" for k, v in r["trained_with"].items())
            + ".",
            "- Output: the probability of referable diabetic retinopathy (ICDR grade >= "
            f"{REFERABLE_MIN_GRADE}) and a referral decision at each operating point "
            "(serving.json).",
        ]
    )


def _data(facts: dict) -> str:
    data = facts["data"]
    return (
        f"Training and evaluation data: {data['layout']}, split by patient (seed "
        f"{data['split_seed']}); reference standard: the adjudicated grade (training "
        f"learnt from: {data['train_label']}).\n\n" + split_table(data["splits"])
    )


def _metrics(metrics: dict | None, checkpoint: str) -> str:
    if metrics is None:
        return (
            "Not evaluated yet: run `python -m retina.evaluate run_dir=<this run> "
            f"checkpoint={checkpoint}` and export again to fill this section."
        )
    eye, patient = metrics["eye_level"], metrics["patient_level"]
    rows = [
        ["referable AUC (eye)", format_interval(eye["referable_auc"])],
        ["referable AUC (patient)", format_interval(patient["referable_auc"])],
    ]
    for name, point in eye["operating_points"].items():
        rows.append([f"sensitivity at {name}", format_interval(point["sensitivity"])])
        rows.append([f"specificity at {name}", format_interval(point["specificity"])])
    return (
        f"On the held-out test split ({eye['n']} scans, {eye['n_referable']} referable; "
        f"{patient['n']} patients), with 95% intervals (AUC: patient bootstrap; rates: "
        "Wilson):\n\n" + markdown_table(["metric", "value [95% CI]"], rows)
    )


def _quality_gate(metrics: dict | None) -> str:
    """The quality gate's section: what it withholds, and how, on the test split."""
    if metrics is None:
        return "## Quality gate\n\nNot evaluated yet (see Metrics)."
    return quality_gate_section(metrics)


def _subgroups(metrics: dict | None) -> str:
    if not metrics or not metrics.get("subgroups"):
        return "## Subgroups\n\nNot evaluated."
    return subgroup_section(metrics["subgroups"])


def _caveats(facts: dict) -> str:
    lines = [
        "- Operating points were chosen on the validation split and frozen; a new site "
        "should check them on its own labelled scans before use.",
        "- Confidence intervals are wide for small test sets and small subgroups (flagged "
        "above); a group flagged too small to judge has not been shown to work.",
    ]
    if facts["data"]["layout"] == "synthetic":
        lines.append(
            "- Trained and evaluated on the built-in procedural data, not patient "
            "photographs: this model is a demonstration, not a screening device."
        )
    return "\n".join(lines)
