"""``report.md``: an evaluation's tables (AUCs, operating points, grading metrics, subgroups)
and its plots on one page. Undefined metrics (``nan``, or ``None`` once read back from
JSON) are written as ``n/a``: a split with no referable case still gets its report.
"""

from __future__ import annotations

import os
from pathlib import Path

from retina.files import write_atomically
from retina.icdr import GRADE_NAMES
from retina.reports.figures import PLOT_TITLES
from retina.reports.tables import (
    LEVELS,
    class_names,
    format_count,
    format_interval,
    format_number,
    markdown_table,
    ordered_points,
)
from retina.run_dir import REPORT_FILE


def write_report(
    out_dir: Path, metrics: dict, plots: dict[str, Path], sections: tuple[str, ...] = ()
) -> Path:
    """Writes ``report.md``: AUCs, operating points, grading metrics and the plots.

    Args:
        out_dir: folder to write into; created if missing. Plots are linked relative to it.
        metrics: the evaluation metrics, as ``evaluate_run`` returns them.
        plots: the figures to embed, by name, as ``write_plots`` returns them.
        sections: further Markdown sections, placed before the plots.

    Returns:
        The report's path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [
        _header(metrics),
        auc_table(metrics),
        *(level_section(metrics[key], label) for key, label in LEVELS.items()),
        *sections,
        _plots_section(out_dir, plots),
    ]
    return write_atomically(out_dir / REPORT_FILE, "\n\n".join(sections) + "\n")


def _header(metrics: dict) -> str:
    eye, patient = metrics["eye_level"], metrics["patient_level"]
    return "\n".join(
        [
            f"# Evaluation of {metrics['checkpoint']} on {metrics['dataset']}",
            "",
            f"- Eyes: {_counted(eye)}",
            f"- Patients: {_counted(patient)}",
            f"- Referable DR: ICDR grade >= {metrics['referable_min_grade']}",
            f"- Operating points: {metrics['operating_points_source']}",
            f"- Grade call: {grade_call(metrics.get('grading'))}",
        ]
    )


def grade_call(grading: dict | None) -> str:
    """How the head calls a grade, in words (older metrics.json files: a softmax head)."""
    if not grading or "cut_points" not in grading:
        head = (grading or {}).get("head", "softmax")
        return f"{head} head, the most probable class"
    cuts = ", ".join(format_number(c) for c in grading["cut_points"])
    if not grading["cut_points_fitted"]:
        return f"{grading['head']} head, the expected grade cut at the grade boundaries ({cuts})"
    return (
        f"{grading['head']} head, the expected grade cut at {cuts} (fitted on validation for kappa)"
    )


def _counted(level: dict) -> str:
    """``120 (48 referable)``."""
    return f"{format_count(level['n'])} ({format_count(level['n_referable'])} referable)"


def auc_table(metrics: dict) -> str:
    rows = []
    for key, label in LEVELS.items():
        level = metrics[key]
        auc = format_interval(level["referable_auc"])
        rows.append([label, format_count(level["n"]), format_count(level["n_referable"]), auc])
    header = ["Level", "n", "Referable", "AUC [95% CI]"]
    return f"## Referable DR (grade >= {metrics['referable_min_grade']})\n\n" + markdown_table(
        header, rows
    )


def level_section(level: dict, label: str) -> str:
    parts = [
        f"## {label} level",
        f"### Operating points ({label.lower()} level)",
        _operating_points_table(level["operating_points"]),
        f"### Grading ({label.lower()} level)",
        _grading_summary(level),
    ]
    if level.get("per_grade"):  # a referable (binary) head predicts no grade
        parts.append(_per_grade_table(level["per_grade"]))
    parts += [f"### Confusion matrix ({label.lower()} level)", _confusion_table(level)]
    return "\n\n".join(parts)


def _operating_points_table(points: dict) -> str:
    rates, counts = ("sensitivity", "specificity", "ppv", "npv"), ("tp", "fp", "tn", "fn")
    header = ["Operating point", "Threshold", "Sensitivity [95% CI]", "Specificity [95% CI]"]
    header += ["PPV [95% CI]", "NPV [95% CI]", "TP", "FP", "TN", "FN"]
    rows = [
        [name, format_number(point["threshold"])]
        + [format_interval(point[rate]) for rate in rates]
        + [format_count(point[count]) for count in counts]
        for name, point in ordered_points(points)
    ]
    return markdown_table(header, rows)


def _grading_summary(level: dict) -> str:
    return "\n".join(
        [
            f"- Quadratic weighted kappa: {format_number(level['quadratic_weighted_kappa'])}",
            f"- Accuracy: {format_number(level['accuracy'])}",
            f"- Expected calibration error: {format_number(level['expected_calibration_error'])}",
        ]
    )


def _per_grade_table(per_grade: dict) -> str:
    names = class_names(len(GRADE_NAMES))
    rows = [
        [
            names[int(grade)] if int(grade) < len(names) else str(grade),
            format_count(values["support"]),
        ]
        + [format_number(values["precision"]), format_number(values["recall"])]
        for grade, values in sorted(per_grade.items(), key=lambda item: int(item[0]))
    ]
    return markdown_table(["Grade", "n", "Precision", "Recall"], rows)


def _confusion_table(level: dict) -> str:
    matrix = level["confusion_matrix"]
    if not matrix:
        return "Not defined: no scans."
    names = class_names(len(matrix))
    rows = [[name, *map(format_count, row)] for name, row in zip(names, matrix, strict=True)]
    return "Rows: true; columns: predicted.\n\n" + markdown_table(
        ["True / Predicted", *names], rows
    )


def _plots_section(out_dir: Path, plots: dict[str, Path]) -> str:
    lines = ["## Plots"]
    for name, path in plots.items():
        # Relative links keep the report readable wherever the folder is copied.
        link = Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
        lines.append(f"![{PLOT_TITLES.get(name, name)}]({link})")
    return "\n\n".join(lines)


def subgroup_section(subgroups: dict) -> str:
    """Markdown: the referable decision per subgroup, small groups flagged."""
    header = ["group", "n", "referable", "AUC [95% CI]", "sensitivity", "specificity", "note"]
    rows = []
    for column, groups in subgroups.items():
        for value, group in groups.items():
            default = group["operating_points"].get("default", {})
            rows.append(
                [
                    f"{column} = {value}",
                    group["n"],
                    group["n_referable"],
                    format_interval(group["referable_auc"]),
                    format_interval(default.get("sensitivity")),
                    format_interval(default.get("specificity")),
                    "too small to judge" if group["too_small"] else "",
                ]
            )
    note = "Default operating point; too small: under 30 scans or under 10 referable."
    return "## Subgroups\n\n" + note + "\n\n" + markdown_table(header, rows)
