"""``report.html``: an evaluation as a clinician, reviewer or ethics board reads it.

One self-contained file beside ``report.md``: the styles in one ``<style>`` element, every
figure inlined as a ``data:`` URI, no script and no reference that leaves the file, so it
opens offline, from an e-mail or an archive. Sections follow TRIPOD+AI and CLAIM: intended
use; data provenance and flow; reference standard; the patient-level split; operating
points; results with 95% intervals; calibration; subgroups; referral and shifted data;
the failure gallery; limitations; reproducibility. Text is written as Markdown (the same
tables as ``report.md``) and converted with python-markdown.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

from retina.files import write_atomically
from retina.reports.figures import PLOT_TITLES
from retina.reports.provenance import describe_initial_weights
from retina.reports.quality_gate import quality_gate_section
from retina.reports.referral_curves import referral_section
from retina.reports.report_md import auc_table, grade_call, level_section, subgroup_section
from retina.reports.shift_comparison import comparison_section
from retina.reports.shift_comparison import summary as shift_summary
from retina.reports.tables import format_interval, format_number, markdown_table
from retina.run_dir import REPORT_HTML_FILE

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1b1b1b; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; }
th { background: #f0f0f0; }
figure { display: inline-block; margin: .5rem; vertical-align: top; }
figure img { max-width: 100%; }
.plot img { width: 28rem; }
.gallery img { width: 14rem; image-rendering: auto; }
figcaption { font-size: .85rem; color: #444; max-width: 14rem; }
.plot figcaption { max-width: 28rem; }
.note { color: #444; font-size: .9rem; }
"""
INTENDED_USE = (
    "Ranks colour fundus photographs of adults with diabetes for **referable diabetic "
    "retinopathy** (ICDR grade >= {grade}: moderate non-proliferative DR or worse) and refers "
    "those at or above an operating point chosen on validation data. Intended as a research "
    "model for screening triage, its output read by a clinician.\n\n"
    "Out of scope: diagnosis; other eye disease (glaucoma, age-related macular degeneration, "
    "vein occlusion); grading of photographs the graders found ungradable; cameras, "
    "populations or image sizes unlike the training data without a local evaluation."
)


def write_html_report(out_dir: Path, metrics: dict, plots: dict[str, Path], facts: dict) -> Path:
    """Writes ``<out_dir>/report.html``; ``facts`` as ``retina.reports.provenance.study_facts``
    returns them (empty for what is not known)."""
    sections = [
        ("Intended use", _intended_use(metrics, facts)),
        ("Data: provenance and flow", _data_flow(metrics, facts)),
        ("Reference standard", _reference_standard(facts)),
        ("Patient-level split and prevalence", _split(facts)),
        ("Operating points", _operating_points(metrics)),
        ("Quality gate", quality_gate_section(metrics, titled=False)),
        ("Results with 95% confidence intervals", _results(metrics, plots)),
        ("Calibration", _calibration(metrics, plots)),
        (
            "Subgroups",
            _demoted(subgroup_section(metrics["subgroups"]))
            if metrics["subgroups"]
            else "No subgroup column was evaluated.",
        ),
        ("Referral and shifted data", _referral(metrics, plots)),
        ("Failure gallery", _gallery(out_dir, metrics.get("failure_gallery", []))),
        ("Limitations", _limitations(metrics, facts)),
        ("Reproducibility", _reproducibility(facts)),
    ]
    title = f"Evaluation of {metrics['checkpoint']} on {metrics['dataset']}"
    body = "\n".join(
        f'<section id="s{i}"><h2>{i}. {name}</h2>\n{_to_html(text)}</section>'
        for i, (name, text) in enumerate(sections, start=1)
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    return write_atomically(Path(out_dir) / REPORT_HTML_FILE, page)


def _to_html(text: str) -> str:
    return markdown.markdown(text, extensions=["tables"])


def _demoted(text: str) -> str:
    """Markdown of report.md's sections, their headings one level down (this page's
    numbered sections are the second level)."""
    return re.sub(r"^(#+) ", r"##\1 ", text, flags=re.MULTILINE)


def figure(path: Path, caption: str, kind: str = "plot") -> str:
    """An inline PNG with its caption (raw HTML, which Markdown passes through)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure class="{kind}"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _plots(plots: dict[str, Path], names: tuple[str, ...]) -> str:
    shown = [figure(plots[n], PLOT_TITLES.get(n, n)) for n in names if n in plots]
    return "<div>" + "".join(shown) + "</div>" if shown else ""


def _intended_use(metrics: dict, facts: dict) -> str:
    model = facts.get("model", {})
    built = (
        f"\n\nModel: {model['name']} ({model['head']} head) on {model['image_size']}-pixel "
        f"preprocessed scans. Grade call: {grade_call(metrics.get('grading'))}. Initial "
        f"weights: {describe_initial_weights(model.get('initial_weights', _UNKNOWN))}."
        if model
        else ""
    )
    return INTENDED_USE.format(grade=metrics["referable_min_grade"]) + built


def _data_flow(metrics: dict, facts: dict) -> str:
    evaluated = (
        f"Evaluated here: {metrics['dataset']}, {metrics['eye_level']['n']} scans of "
        f"{metrics['patient_level']['n']} patients."
    )
    data = facts.get("data")
    if not data:
        return evaluated + " The training data are not known here (no single training run)."
    sites = f", sites {', '.join(data['sites'])}" if data["sites"] else ""
    total = sum(row["scans"] for row in data["splits"])
    lines = [evaluated, f"The run's data set: {data['layout']}{sites}; scans used: {total}."]
    left_out = data["left_out"]
    lines.append(
        "Left out before the split: "
        + (", ".join(f"{n} {reason}" for reason, n in left_out.items()) if left_out else "none")
        + " (the run's bad_inputs.csv)."
    )
    graders = data["graders"]
    if graders.get("ungradable_share_left_out") is not None:
        lines.append(
            f"Scans the graders found ungradable are left out before the manifest: "
            f"{graders['ungradable_share_left_out']:.1%} of the generated set."
        )
    flagged = data["flagged_ungradable"]
    lines.append(
        "Flagged by the image checks as possibly ungradable, kept and reported as the "
        "image_quality subgroup: "
        + (", ".join(f"{n} {reason}" for reason, n in flagged.items()) if flagged else "none")
        + "."
    )
    return "\n\n".join(lines)


def _reference_standard(facts: dict) -> str:
    data = facts.get("data")
    if not data:
        return "The evaluated data set's grade column."
    lines = [
        "Evaluation compares with the adjudicated ICDR grade of each scan; training learnt "
        f"from: {data['train_label']}."
    ]
    graders = data["graders"]
    if graders.get("mean_pairwise_quadratic_kappa") is not None:
        lines.append(
            f"{graders['graders']} graders per scan; mean pairwise quadratic weighted kappa "
            f"{graders['mean_pairwise_quadratic_kappa']:.3f}."
        )
    return "\n\n".join(lines)


def _split(facts: dict) -> str:
    data = facts.get("data")
    if not data:
        return "Not known for this evaluation."
    folds = f"; validation fold {data['fold']} of {data['folds']}" if data["folds"] else ""
    return (
        f"Patients, not scans, are split (seed {data['split_seed']}{folds}), stratified by "
        "each patient's worst grade, so no patient's eyes are on both sides of a split.\n\n"
        + split_table(data["splits"])
    )


def split_table(splits: list[dict]) -> str:
    """Markdown: scans, patients, referable scans and prevalence per split."""
    rows = [
        [r["split"], r["scans"], r["patients"], r["referable"], format_number(r["prevalence"])]
        for r in splits
    ]
    return markdown_table(["split", "scans", "patients", "referable", "prevalence"], rows)


def _operating_points(metrics: dict) -> str:
    points = metrics["eye_level"]["operating_points"]
    rows = [[name, format_number(point["threshold"], 4)] for name, point in points.items()]
    return (
        f"Thresholds {metrics['operating_points_source']}, stored in the checkpoint and "
        "frozen: nothing is tuned on the evaluated scans.\n\n"
        + markdown_table(["operating point", "threshold on the referable probability"], rows)
    )


def _results(metrics: dict, plots: dict[str, Path]) -> str:
    parts = [_demoted(auc_table(metrics)), _demoted(level_section(metrics["eye_level"], "Eye"))]
    parts.append(_plots(plots, ("roc", "score_distributions", "confusion_matrix")))
    return "\n\n".join(parts)


def _calibration(metrics: dict, plots: dict[str, Path]) -> str:
    ece = metrics["eye_level"]["expected_calibration_error"]
    return f"Expected calibration error: {format_number(ece)}.\n\n" + _plots(
        plots, ("calibration",)
    )


def _referral(metrics: dict, plots: dict[str, Path]) -> str:
    parts = [_demoted(referral_section(metrics)), _plots(plots, ("referral", "uncertainty"))]
    if "in_domain" in metrics:
        parts.append(_demoted(comparison_section(metrics["in_domain"], shift_summary(metrics))))
    else:
        parts.append("No external or shifted data set was evaluated beside this one.")
    return "\n\n".join(parts)


def _gallery(out_dir: Path, gallery: list[dict]) -> str:
    if not gallery:
        return (
            "No false negative or false positive at the default operating point, or no "
            "overlays (evaluate explain=false, or an ensemble)."
        )
    figures = [
        figure(
            Path(out_dir) / case["overlay"],
            f"{case['kind']}: scan {case['scan_id']}, grade {case['grade']}, "
            f"referable probability {case['referable_probability']:.3f}",
            "gallery",
        )
        for case in gallery
    ]
    return (
        "The most confident misses at the default operating point, with the Grad-CAM map of "
        "the referable score over the preprocessed scan (brighter: more evidence for "
        "referral). Scans are named by pseudonymous id.\n\n<div>" + "".join(figures) + "</div>"
    )


def _limitations(metrics: dict, facts: dict) -> str:
    eye = metrics["eye_level"]
    auc = eye["referable_auc"]
    small = [
        f"{column} = {value}"
        for column, groups in metrics["subgroups"].items()
        for value, group in groups.items()
        if group["too_small"]
    ]
    lines = [
        f"- {eye['n']} scans ({eye['n_referable']} referable): the AUC's 95% interval is "
        f"{format_interval(auc)}, {_width(auc)} wide.",
        "- Subgroups too small to judge: " + (", ".join(small) if small else "none") + ".",
        "- Grad-CAM maps have the resolution of the last feature map and show where the score "
        "is sensitive, not why; they are not lesion segmentations.",
    ]
    if facts.get("data", {}).get("layout") == "synthetic":
        lines.append(
            "- The data are the built-in procedural screening programme, not photographs of "
            "patients: the figures describe the software, not clinical performance."
        )
    return "\n".join(lines)


def _width(interval: dict) -> str:
    try:
        return format_number(interval["high"] - interval["low"])
    except TypeError:  # an undefined interval (None)
        return "n/a"


_UNKNOWN = {"weights": "not recorded"}


def _reproducibility(facts: dict) -> str:
    r = facts.get("reproducibility")
    if not r:
        return "Not known for this evaluation."
    versions = ", ".join(f"{k} {v}" for k, v in r["evaluated_with"].items())
    trained = ", ".join(f"{k} {v}" for k, v in r["trained_with"].items())
    rows = [
        ["code", r["code_version"]],
        ["config hash (SHA-256)", r["config_hash"]],
        ["checkpoint", r["checkpoint"]],
        ["checkpoint weights (SHA-256)", r["checkpoint_sha256"]],
        ["data manifest hash (SHA-256)", r["manifest_hash"]],
        [
            "initial weights",
            describe_initial_weights(facts.get("model", {}).get("initial_weights", _UNKNOWN)),
        ],
        ["trained with", trained],
        ["evaluated with", versions],
    ]
    return markdown_table(["", "value"], rows)
