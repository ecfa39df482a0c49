"""The plots of an evaluation: ``write_plots`` (ROC with the operating points, confusion
matrix, calibration, score distributions) and ``save_figure``, which every plot of the
project goes through.

Figures are drawn with matplotlib's object API on an Agg canvas and pyplot is never
imported: pyplot keeps global figure state and fixes one backend for the whole process,
which a library imported into a notebook or a headless job has no business doing. Every
figure has a fixed size, resolution and style, and its PNG carries no version or date, so
evaluating the same predictions twice writes byte-identical files. An undefined metric is
drawn as a "not defined" note.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from retina.files import write_atomically
from retina.icdr import GRADE_NAMES
from retina.reports.tables import (
    as_float,
    class_names,
    format_count,
    format_interval,
    format_number,
    ordered_points,
)

PLOT_TITLES = {
    "roc": "ROC",
    "confusion_matrix": "Confusion matrix",
    "calibration": "Calibration",
    "score_distributions": "Score distributions",
    "referral": "Referral (retention) curves",
    "uncertainty": "Uncertainty of right and wrong decisions",
}
FIGURE_SIZE = (6.4, 4.8)  # inches; at DPI, 640 x 480 pixels
DPI = 100
# matplotlib stamps its version into the PNG "Software" chunk; without it the bytes depend
# only on what is drawn.
PNG_METADATA = {"Software": None}
MARKERS = ("o", "s", "^", "D", "v")
LINE_STYLES = ("-", "--", ":", "-.")


# --- Plots -------------------------------------------------------------------------------


def write_plots(out_dir: Path, predictions: pd.DataFrame, metrics: dict) -> dict[str, Path]:
    """Writes the four eye-level figures of an evaluation as PNGs.

    Args:
        out_dir: folder to write into; created if missing.
        predictions: one row per scan with at least ``grade`` and ``referable_probability``.
        metrics: the evaluation metrics, as ``evaluate_run`` returns them.

    Returns:
        The written files by name: ``roc``, ``confusion_matrix``, ``calibration`` and
        ``score_distributions``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eye = metrics["eye_level"]
    grades = predictions["grade"].to_numpy(dtype=float)
    scores = predictions["referable_probability"].to_numpy(dtype=float)
    positive = grades >= metrics["referable_min_grade"]
    ece = eye["expected_calibration_error"]
    painters = {
        "roc": lambda ax: _draw_roc(ax, positive, scores, eye),
        "confusion_matrix": lambda ax: _draw_confusion_matrix(ax, eye["confusion_matrix"]),
        "calibration": lambda ax: _draw_calibration(ax, eye["calibration"], ece),
        "score_distributions": lambda ax: _draw_scores(ax, grades, scores, eye["operating_points"]),
    }
    return {name: save_figure(out_dir / f"{name}.png", paint) for name, paint in painters.items()}


def save_figure(path: Path, paint: Callable[[Axes], None]) -> Path:
    # The default style, not the user's matplotlibrc, so that the figure looks (and hashes)
    # the same on every machine.
    with matplotlib.style.context("default"):
        figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        paint(figure.add_subplot())
        save = partial(figure.savefig, format="png", dpi=DPI, metadata=PNG_METADATA)
        write_atomically(path, save)
    return path


def _say_not_defined(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="firebrick")


def _add_legend(ax: Axes, location: str) -> None:
    # An empty legend() call warns; a degenerate split can leave nothing labelled.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=location, fontsize="small")


def _draw_roc(ax: Axes, positive: np.ndarray, scores: np.ndarray, level: dict) -> None:
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    known = np.isfinite(scores)
    positive, scores = positive[known], scores[known]
    if positive.any() and not positive.all():
        false_positive_rate, true_positive_rate, _ = roc_curve(positive, scores)
        auc = format_interval(level["referable_auc"])
        ax.plot(false_positive_rate, true_positive_rate, linewidth=2, label=f"AUC {auc}")
    else:
        _say_not_defined(ax, "ROC not defined:\nthe scans are all referable or all not")
    for index, (name, point) in enumerate(ordered_points(level["operating_points"])):
        _mark_operating_point(ax, index, name, point)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 - specificity", ylabel="Sensitivity")
    ax.set_title("Referable DR, eye level")
    _add_legend(ax, "lower right")


def _mark_operating_point(ax: Axes, index: int, name: str, point: dict) -> None:
    x = 1 - as_float(point["specificity"]["value"])
    y = as_float(point["sensitivity"]["value"])
    label = f"{name} (threshold {format_number(point['threshold'])})"
    style = {"marker": MARKERS[index % len(MARKERS)], "color": f"C{index + 1}", "linestyle": ""}
    if not (math.isfinite(x) and math.isfinite(y)):
        ax.plot([], [], label=f"{label}: not defined", **style)
        return
    ax.plot([x], [y], markersize=8, label=label, clip_on=False, **style)
    # Stagger the labels: the points often sit close together near the top-left corner.
    offset = (8, -12 - 10 * index)
    ax.annotate(name, (x, y), xytext=offset, textcoords="offset points", fontsize="small")


def _draw_confusion_matrix(ax: Axes, matrix: list[list[int]]) -> None:
    counts = np.asarray(matrix, dtype=float)
    ax.set_title("Confusion matrix, eye level")
    if counts.ndim != 2 or counts.size == 0 or counts.shape[0] != counts.shape[1]:
        _say_not_defined(ax, "confusion matrix not defined")
        return
    top = max(float(np.nanmax(counts)), 1.0)
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=top)
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if count > top / 2 else "black"
        ax.text(column, row, format_count(count), ha="center", va="center", color=colour)
    names, ticks = class_names(len(counts)), range(len(counts))
    ax.set_xticks(ticks, names, rotation=30, ha="right")
    ax.set_yticks(ticks, names)
    ax.set(xlabel="Predicted", ylabel="True")


def _draw_calibration(ax: Axes, bins: list[dict], ece: float | None) -> None:
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    filled = [
        b
        for b in bins
        if as_float(b["count"]) > 0
        and math.isfinite(as_float(b["mean_score"]))
        and math.isfinite(as_float(b["fraction_positive"]))
    ]
    if filled:
        _draw_bins(ax, filled)
    else:
        _say_not_defined(ax, "calibration not defined:\nno scored scans")
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="Mean referable probability in bin")
    ax.set(ylabel="Fraction referable")
    ax.set_title(f"Calibration, eye level (ECE {format_number(ece)})")
    _add_legend(ax, "upper left")


def _draw_bins(ax: Axes, bins: list[dict]) -> None:
    lower = [b["lower"] for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    means = [b["mean_score"] for b in bins]
    fractions = [b["fraction_positive"] for b in bins]
    ax.bar(lower, fractions, width=widths, align="edge", alpha=0.25, edgecolor="C0")
    ax.plot(means, fractions, marker="o", color="C0", label="model", clip_on=False)
    # The scan count per bin says how much each point can be trusted.
    for mean, fraction, b in zip(means, fractions, bins, strict=True):
        ax.text(mean, fraction + 0.02, format_count(b["count"]), ha="center", fontsize="x-small")


def _draw_scores(ax: Axes, grades: np.ndarray, scores: np.ndarray, points: dict) -> None:
    known = np.isfinite(scores)
    groups = [scores[known & (grades == grade)] for grade in range(len(GRADE_NAMES))]
    filled = [grade for grade, group in enumerate(groups) if len(group)]
    if filled:
        _draw_strips(ax, [groups[grade] for grade in filled], filled)
    else:
        _say_not_defined(ax, "no scored scans")
    for index, (name, point) in enumerate(ordered_points(points)):
        threshold = as_float(point["threshold"])
        if math.isfinite(threshold):
            style = {"color": f"C{index + 1}", "linestyle": LINE_STYLES[index % len(LINE_STYLES)]}
            ax.axhline(threshold, label=f"{name} threshold {threshold:.3f}", **style)
    names = class_names(len(GRADE_NAMES))
    labels = [f"{name}\nn={len(group)}" for name, group in zip(names, groups, strict=True)]
    ax.set_xticks(range(len(GRADE_NAMES)), labels)
    ax.set(xlim=(-0.5, 4.5), ylim=(-0.02, 1.02), xlabel="True grade")
    ax.set(ylabel="Referable probability", title="Referable probability by true grade, eye level")
    _add_legend(ax, "upper left")


def _draw_strips(ax: Axes, groups: list[np.ndarray], positions: list[int]) -> None:
    ax.boxplot(groups, positions=positions, widths=0.5, showfliers=False, manage_ticks=False)
    jitter = np.random.default_rng(0)  # seeded: the same scans give the same figure
    for position, group in zip(positions, groups, strict=True):
        x = position + jitter.uniform(-0.15, 0.15, len(group))
        ax.scatter(x, group, s=10, alpha=0.5, color="C0")


# --- Report ------------------------------------------------------------------------------
