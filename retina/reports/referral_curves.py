"""The referral part of an evaluation's report: retention curves beside the random
baseline, uncertainty of right and wrong decisions, and the table behind them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from retina.metrics.rates import is_referable
from retina.metrics.retention import METRICS
from retina.reports.figures import save_figure
from retina.reports.tables import format_interval, markdown_table
from retina.uncertainty.referral import ranking_column


def write_referral_plots(out_dir: Path, predictions: pd.DataFrame, metrics: dict) -> dict:
    referral = metrics["referral"]
    column = ranking_column(referral["measure"], predictions)
    curves = {metrics["dataset"]: referral}
    if "in_domain" in metrics:  # shifted: the run's own test split beside it
        curves = {metrics["in_domain"]["dataset"]: metrics["in_domain"]["referral"], **curves}
    painters = {
        "referral": lambda ax: draw_retention(ax, curves),
        "uncertainty": lambda ax: _draw_uncertainty(ax, predictions, column),
    }
    return {
        name: save_figure(Path(out_dir) / f"{name}.png", paint) for name, paint in painters.items()
    }


def draw_retention(ax: Axes, referrals: dict, metric: str = "referable_auc") -> None:
    """Plain and oracle curves of each data set, and its random-referral baseline."""
    for index, (name, referral) in enumerate(referrals.items()):
        curve = referral["curve"]
        fractions = np.asarray(curve["fractions"])
        for variant, style in (("plain", "-"), ("oracle", ":")):
            values = np.array([np.nan if v is None else v for v in curve[variant][metric]])
            ax.plot(fractions, values, style, color=f"C{index}", label=f"{name}: {variant}")
        table = referral["table"]["random"][metric]
        ax.plot(
            referral["fractions"],
            [e["value"] for e in table],
            "--",
            color=f"C{index}",
            alpha=0.6,
            label=f"{name}: random referral",
        )
    ax.set(
        xlim=(1.0, 0.0),
        xlabel="Kept fraction (most uncertain referred first)",
        ylabel=metric.replace("_", " "),
        title=f"Referral by {_measure(referrals)}",
    )
    ax.legend(loc="lower left", fontsize="small")


def _calibration_phrase(calibration: dict | None) -> str:
    if not calibration:
        return "of the model's own referable probabilities (not recalibrated)"
    return (
        "of referable probabilities Platt-recalibrated on validation (slope "
        f"{calibration['slope']:.3f}, intercept {calibration['intercept']:.3f})"
    )


def _measure(referrals: dict) -> str:
    referral = next(iter(referrals.values()))
    recalibrated = ", recalibrated" if referral.get("calibration") else ""
    return f"{referral['measure'].replace('_', ' ')} ({referral['method']}{recalibrated})"


def _draw_uncertainty(ax: Axes, predictions: pd.DataFrame, column: str) -> None:
    referred = predictions["referred_default"].to_numpy(bool)
    right = referred == is_referable(predictions["grade"].to_numpy())
    values = predictions[column].to_numpy()
    bins = np.linspace(0, max(values.max(), 1e-6), 30)
    ax.hist(values[right], bins=bins, alpha=0.6, label=f"right decision (n={right.sum()})")
    ax.hist(values[~right], bins=bins, alpha=0.6, label=f"wrong decision (n={(~right).sum()})")
    ax.set(
        xlabel=column.replace("_", " "),
        ylabel="Scans",
        title="Uncertainty of the referable decision",
    )
    ax.legend(loc="upper right", fontsize="small")


def referral_section(metrics: dict) -> str:
    """Markdown: the kept-fraction table of the plain curve, the areas and the policy."""
    referral = metrics["referral"]
    header = ["kept", *METRICS]
    rows = [
        [f"{fraction:.0%}", *(format_interval(referral["table"]["plain"][m][i]) for m in METRICS)]
        for i, fraction in enumerate(referral["fractions"])
    ]
    areas = [
        [variant, *(format_interval(referral["area"][variant][m]) for m in METRICS)]
        for variant in ("plain", "oracle", "random")
    ]
    areas.append(
        ["plain - random", *(format_interval(referral["area_minus_random"][m]) for m in METRICS)]
    )
    lines = [
        "## Referral by uncertainty",
        f"Ranked by {_measure({'': referral})}, {referral['samples']} sample(s) per scan, "
        f"{_calibration_phrase(referral.get('calibration'))}; the most uncertain scans are "
        "referred first. 95% intervals: patient bootstrap.",
        markdown_table(header, rows),
        "Area under each retention curve (mean over kept fractions 0.5-1.0):",
        markdown_table(["curve", *METRICS], areas),
    ]
    policy = referral.get("policy")
    if policy:
        lines.append(
            f"Policy ({policy['chosen_on']}): refer when {policy['measure']} > "
            f"{policy['threshold']:.4f} or at the default operating point; referred here: "
            f"{policy['referred_share']:.1%}."
        )
    return "\n\n".join(lines)
