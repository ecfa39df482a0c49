"""The evaluation report: valid fixed-size PNGs, the numbers in report.md, byte-identical
rewrites, and files even when every metric is undefined."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from conftest import ROOT
from retina.reports.figures import write_plots
from retina.reports.report_md import write_report
from retina.reports.tables import format_interval, format_number

PLOT_NAMES = {"roc", "confusion_matrix", "calibration", "score_distributions"}
NAN = float("nan")
THRESHOLDS = {"default": 0.5, "high_sensitivity": 0.3, "high_specificity": 0.7}
SOURCE = "chosen on the validation split at step 238: sensitivity >= 0.975, specificity >= 0.98"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else NAN


def _interval(value: float) -> dict:
    """A made-up 95% CI around ``value``; nan stays nan, as the metrics code reports it."""
    low, high = np.clip([value - 0.05, value + 0.05], 0, 1)
    return {"value": value, "low": float(low), "high": float(high)}


def _operating_point(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    referred = scores >= threshold
    tp, fp = int((referred & positive).sum()), int((referred & ~positive).sum())
    tn, fn = int((~referred & ~positive).sum()), int((~referred & positive).sum())
    rates = {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    return {"threshold": threshold, **counts, **{k: _interval(v) for k, v in rates.items()}}


def _calibration(positive: np.ndarray, scores: np.ndarray) -> tuple[list[dict], float]:
    edges, bins, ece = np.linspace(0, 1, 6), [], 0.0
    for lower, upper in zip(edges[:-1], edges[1:], strict=True):
        inside = (scores >= lower) & ((scores < upper) | (upper == 1))
        mean = float(scores[inside].mean()) if inside.any() else NAN
        fraction = float(positive[inside].mean()) if inside.any() else NAN
        if inside.any():
            ece += inside.sum() / len(scores) * abs(mean - fraction)
        bins.append(
            {
                "lower": float(lower),
                "upper": float(upper),
                "mean_score": mean,
                "fraction_positive": fraction,
                "count": int(inside.sum()),
            }
        )
    return bins, float(ece)


def _level(table: pd.DataFrame, binary_head: bool) -> dict:
    """One level's metrics, computed plainly from ``table`` so the report has real numbers."""
    grades, scores = table["grade"].to_numpy(), table["referable_probability"].to_numpy()
    predicted, positive = table["predicted_grade"].to_numpy(), grades >= 2
    two_classes = positive.any() and not positive.all()
    classes = 2 if binary_head else 5
    truth = positive.astype(int) if binary_head else grades
    matrix = np.zeros((classes, classes), int)
    np.add.at(matrix, (truth, predicted), 1)
    calibration, ece = _calibration(positive, scores)
    points = {name: _operating_point(positive, scores, t) for name, t in THRESHOLDS.items()}
    level = {
        "n": len(table),
        "n_referable": int(positive.sum()),
        "referable_auc": _interval(float(roc_auc_score(positive, scores)) if two_classes else NAN),
        "operating_points": points,
        "expected_calibration_error": ece,
        "calibration": calibration,
        "accuracy": float(np.mean(predicted == truth)) if len(table) else NAN,
        "quadratic_weighted_kappa": NAN if binary_head else 0.71,
        "confusion_matrix": matrix.tolist(),
    }
    if not binary_head:
        level["per_grade"] = {
            str(g): {
                "precision": _ratio(matrix[g, g], matrix[:, g].sum()),
                "recall": _ratio(matrix[g, g], matrix[g].sum()),
                "support": int(matrix[g].sum()),
            }
            for g in range(5)
        }
    return level


def _evaluation(grades: np.ndarray, binary_head: bool = False) -> tuple[pd.DataFrame, dict]:
    """Predictions for two eyes per patient, scores rising with the grade, and their metrics."""
    rng = np.random.default_rng(7)
    n = len(grades)
    scores = 1 / (1 + np.exp(-(2.0 * (grades - 1.5) + rng.normal(0, 1.2, n))))
    predicted = np.clip(np.rint(grades + rng.normal(0, 0.7, n)), 0, 4).astype(int)
    predictions = pd.DataFrame(
        {
            "scan_id": [f"scan{i:03d}" for i in range(n)],
            "patient": [f"p{i // 2:03d}" for i in range(n)],
            "eye": ["left", "right"] * (n // 2),
            "grade": grades.astype(int),
            "predicted_grade": (scores >= 0.5).astype(int) if binary_head else predicted,
            "referable_probability": scores,
        }
    )
    patients = predictions.groupby("patient", sort=True).max(numeric_only=True)
    metrics = {
        "checkpoint": "ckpt-238",
        "dataset": "test",
        "referable_min_grade": 2,
        "operating_points_source": SOURCE,
        "eye_level": _level(predictions, binary_head),
        "patient_level": _level(patients, binary_head),
    }
    return predictions, metrics


def _write(out_dir, predictions, metrics):
    plots = write_plots(out_dir, predictions, metrics)
    return plots, write_report(out_dir, metrics, plots)


@pytest.fixture(scope="module")
def realistic():
    grades = np.random.default_rng(3).choice(5, size=40, p=[0.45, 0.15, 0.2, 0.1, 0.1])
    return _evaluation(grades)


@pytest.fixture(scope="module")
def written(realistic, tmp_path_factory):
    return _write(tmp_path_factory.mktemp("report"), *realistic)


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.95312, "0.953"),
        (1, "1.000"),
        (NAN, "n/a"),
        (None, "n/a"),  # a nan read back from metrics.json
        (math.inf, "n/a"),
    ],
)
def test_format_number(value, expected):
    assert format_number(value) == expected


@pytest.mark.parametrize(
    "estimate, expected",
    [
        ({"value": 0.95312, "low": 0.9211, "high": 0.9779}, "0.953 [0.921, 0.978]"),
        ({"value": 1.0, "low": NAN, "high": NAN}, "1.000 [n/a, n/a]"),
        ({"value": NAN, "low": NAN, "high": NAN}, "n/a"),
        ({"value": None, "low": None, "high": None}, "n/a"),
        (None, "n/a"),
    ],
)
def test_format_interval(estimate, expected):
    assert format_interval(estimate) == expected


def test_plots_are_fixed_size_pngs_with_content(written):
    plots, _ = written
    assert set(plots) == PLOT_NAMES
    for name, path in plots.items():
        assert path.name == f"{name}.png" and path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (640, 480)
            assert "Software" not in image.info  # no matplotlib version in the bytes
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert len(colours) > 20, f"{name} looks blank"


def test_report_holds_the_numbers_links_and_source(realistic, written):
    _, metrics = realistic
    text = written[1].read_text()
    auc = metrics["eye_level"]["referable_auc"]
    assert f"{auc['value']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}]" in text
    assert "# Evaluation of ckpt-238 on test" in text
    assert "## Referable DR (grade >= 2)" in text
    assert f"| Eye | 40 | {metrics['eye_level']['n_referable']} |" in text
    assert f"| Patient | 20 | {metrics['patient_level']['n_referable']} |" in text
    for name in THRESHOLDS:
        assert text.count(f"| {name} |") == 2  # one row per level
    for link in ["![ROC](roc.png)", "![Confusion matrix](confusion_matrix.png)"]:
        assert link in text
    assert "![Calibration](calibration.png)" in text
    assert "![Score distributions](score_distributions.png)" in text
    assert SOURCE in text
    first_row = metrics["eye_level"]["confusion_matrix"][0]
    assert "| 0 No DR | " + " | ".join(map(str, first_row)) + " |" in text
    assert "| Grade | n | Precision | Recall |" in text
    assert "nan" not in text.lower()


def test_writing_twice_gives_identical_files(realistic, written, tmp_path):
    plots, report = written
    again_plots, again_report = _write(tmp_path, *realistic)
    assert again_report.read_bytes() == report.read_bytes()
    for name, path in plots.items():
        assert again_plots[name].read_bytes() == path.read_bytes(), name


@pytest.mark.parametrize("n_scans", [40, 0], ids=["no-referable-case", "no-scan"])
def test_undefined_metrics_still_write_every_file(n_scans, tmp_path):
    # A referable (binary) head on a split with no referable eye: AUC, sensitivity and
    # kappa are undefined, per-grade metrics absent, the confusion matrix 2 x 2.
    predictions, metrics = _evaluation(np.zeros(n_scans, int), binary_head=True)
    assert math.isnan(metrics["eye_level"]["referable_auc"]["value"])
    plots, report = _write(tmp_path, predictions, metrics)
    assert set(plots) == PLOT_NAMES
    for path in plots.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (640, 480)
    text = report.read_text()
    assert f"| Eye | {n_scans} | 0 | n/a |" in text
    assert "- Quadratic weighted kappa: n/a" in text
    assert "| True / Predicted | Not referable | Referable |" in text
    assert "| Grade | n | Precision | Recall |" not in text
    assert "nan" not in text.lower()


def test_the_code_version_names_the_commit_in_a_git_checkout():
    from retina.reports.provenance import _code_version

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an installed copy reports the version alone)")
    assert re.fullmatch(r"retina 0\.1\.0 \(git [0-9a-f]{12}\)", _code_version("0.1.0"))
