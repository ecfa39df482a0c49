"""Evaluation under shift, as reported: the figures compared across data sets and the
Markdown section that puts the in-domain and the shifted ones side by side."""

from __future__ import annotations

from retina.reports.tables import format_count, format_interval, format_number, markdown_table


def summary(metrics: dict) -> dict:
    """The figures compared across data sets."""
    eye, referral = metrics["eye_level"], metrics["referral"]
    default = eye["operating_points"]["default"]
    return {
        "dataset": metrics["dataset"],
        "scans": eye["n"],
        "referable_auc": eye["referable_auc"],
        "sensitivity": default["sensitivity"],
        "specificity": default["specificity"],
        "quadratic_weighted_kappa": eye["quadratic_weighted_kappa"],
        "retention_area_auc": referral["area"]["plain"]["referable_auc"],
        "retention_area_minus_random": referral["area_minus_random"]["referable_auc"],
        "referral": referral,
    }


def comparison_section(in_domain: dict, shifted: dict) -> str:
    """Markdown: in-domain and shifted figures side by side."""
    rows = []
    for key, label in (
        ("scans", "eyes scored"),
        ("referable_auc", "referable AUC"),
        ("sensitivity", "sensitivity (default point)"),
        ("specificity", "specificity (default point)"),
        ("quadratic_weighted_kappa", "quadratic weighted kappa"),
        ("retention_area_auc", "AUC retention curve, area (kept 0.5-1.0)"),
        ("retention_area_minus_random", "area minus random referral"),
    ):
        rows.append([label, _cell(in_domain[key]), _cell(shifted[key])])
    header = ["", f"in-domain: {in_domain['dataset']}", f"shifted: {shifted['dataset']}"]
    return "## In-domain and shifted\n\n" + markdown_table(header, rows)


def _cell(value) -> str:
    if isinstance(value, dict):
        return format_interval(value)
    return format_count(value) if isinstance(value, int) else format_number(value)
