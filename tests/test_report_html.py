"""report.html in a real headless browser (Debian's chromium, driven by Playwright), and the
subgroup figures recomputed from predictions.csv."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

SECTIONS = [
    "Intended use",
    "Data: provenance and flow",
    "Reference standard",
    "Patient-level split and prevalence",
    "Operating points",
    "Quality gate",
    "Results with 95% confidence intervals",
    "Calibration",
    "Subgroups",
    "Referral and shifted data",
    "Failure gallery",
    "Limitations",
    "Reproducibility",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
        if os.environ.get("RETINA_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def evaluation(lesion_run):
    return next((lesion_run / "eval").glob("*-test"))


def test_report_html_renders_offline_with_every_image(evaluation):
    from playwright.sync_api import sync_playwright

    report = evaluation / "report.html"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    requests = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(report.as_uri(), wait_until="load")
        widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
        headings = page.evaluate("[...document.querySelectorAll('h2')].map(h => h.textContent)")
        gallery = page.evaluate("document.querySelectorAll('figure.gallery img').length")
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L")
        browser.close()

    assert headings == [f"{i}. {name}" for i, name in enumerate(SECTIONS, start=1)]
    assert len(widths) >= 8 and all(width > 0 for width in widths), widths
    assert gallery == len(metrics["failure_gallery"]) > 0
    assert [url for url in requests if not url.startswith("data:")] == [report.as_uri()]
    pixels = np.asarray(shot, dtype=float)
    assert pixels.std() > 20 and len(np.unique(pixels)) > 100  # text and figures, not blank


def test_subgroup_figures_recompute_from_predictions_csv(evaluation):
    """AUCs to 1e-4 (the CSV keeps 6 decimals), counts and Wilson bounds exactly."""
    metrics = json.loads((evaluation / "metrics.json").read_text())
    table = pd.read_csv(evaluation / "predictions.csv", dtype={"patient": str})
    assert {"site", "eye", "sex", "age_band", "image_quality"} <= set(table.columns)
    # the metrics are of the scans the quality gate let through that the graders graded
    table = table[(table["quality"] == "gradable") & (table["graders_gradable"] == 1)]
    checked = 0
    for column, groups in metrics["subgroups"].items():
        for value, group in groups.items():
            rows = table[table[column].astype(str) == value]
            positive = rows["grade"] >= metrics["referable_min_grade"]
            assert (group["n"], group["n_referable"]) == (len(rows), positive.sum())
            if 0 < positive.sum() < len(rows):
                auc = roc_auc_score(positive, rows["referable_probability"])
                assert group["referable_auc"]["value"] == pytest.approx(auc, abs=1e-4)
            referred = rows["referred_default"] == 1
            for name, cases, hits in (
                ("sensitivity", positive, referred & positive),
                ("specificity", ~positive, ~referred & ~positive),
            ):
                rate = group["operating_points"]["default"][name]
                if cases.sum():
                    ci = binomtest(int(hits.sum()), int(cases.sum())).proportion_ci(method="wilson")
                    assert (rate["low"], rate["high"]) == (ci.low, ci.high)
                    assert rate["value"] == hits.sum() / cases.sum()
            checked += 1
    assert checked >= 8
