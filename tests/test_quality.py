"""The quality gate: image measures, the fit and its thresholds, and the verdict of predict,
evaluate, explain and the exported SavedModel on a real smoke run (the last in a fresh
process), on fundus scans and on inputs that are not fundus photographs."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import ROOT
from retina.config import QualityConfig
from retina.quality.fit import can_hold_a_share, fit_gate
from retina.quality.gate import VERDICTS, GateParams, gate_batch, reasons_of
from retina.quality.measures import MEASURES, image_measures
from retina.quality.summary import gate_summary

sys.path.insert(0, str(ROOT / "scripts"))
from bench.quality import mix_figures, pages, photographs, write_mix  # noqa: E402


def _fundus_like(size: int = 128, red: int = 180, blur: float = 0.0) -> np.ndarray:
    """A red disc with dark vessels-like stripes on black, as the cache crops a fundus."""
    rows, cols = np.mgrid[:size, :size]
    inside = np.hypot(rows - (size - 1) / 2, cols - (size - 1) / 2) < size / 2 - 1
    image = np.zeros((size, size, 3), np.uint8)
    stripes = 1 - 0.4 * ((cols // 6) % 2)
    image[..., 0] = inside * red * stripes
    image[..., 1] = inside * 70 * stripes
    image[..., 2] = inside * 30
    if blur:
        from scipy import ndimage

        image = ndimage.gaussian_filter(image.astype(float), (blur, blur, 0)).astype(np.uint8)
    return image


MEASURE_CASES = [
    # name, image, what must hold of its measures
    ("black", np.zeros((128, 128, 3), np.uint8), lambda m: m["field"] < 0.1),
    ("white page", np.full((128, 128, 3), 250, np.uint8), lambda m: m["surround"] > 0.9),
    ("fundus", _fundus_like(), lambda m: m["surround"] < 0.05 and m["red"] > m["green"]),
    ("dark fundus", _fundus_like(red=30) // 3, lambda m: m["brightness"] * 255 < 20),
    ("blurred", _fundus_like(blur=6), lambda m: m["sharpness"] < 3.9),
]


@pytest.mark.parametrize("name, image, holds", MEASURE_CASES, ids=[c[0] for c in MEASURE_CASES])
def test_image_measures_eagerly_and_inside_a_dataset(name, image, holds):
    eager = image_measures(tf.constant(image[None])).numpy()[0]
    dataset = tf.data.Dataset.from_tensors(image[None]).map(image_measures)
    in_graph = next(iter(dataset)).numpy()[0]
    np.testing.assert_allclose(eager, in_graph, rtol=1e-5, atol=1e-6)
    named = dict(zip(MEASURES, eager, strict=True))
    assert holds(named), named


def _signals(rng, n: int, shift: float = 0.0, ungradable: int = 0) -> dict:
    features = rng.normal(shift, 1.0, (n, 16)).astype(np.float32)
    measures = rng.normal(0.5 + shift, 0.05, (n, len(MEASURES))).astype(np.float32)
    measures[:, 0] = 1.0  # a whole field of view
    gradable = np.ones(n)
    gradable[:ungradable] = 0
    measures[:ungradable, 2] -= 0.3  # the ungradable ones are less sharp
    return {"features": features, "measures": measures, "gradable": gradable}


def test_too_few_validation_scans_for_the_share_withhold_nothing():
    rng = np.random.default_rng(2)
    params = fit_gate(
        _signals(rng, 60, ungradable=6), _signals(rng, 20, ungradable=2), QualityConfig()
    )
    assert params.novelty_threshold == np.inf and params.score_threshold == 0.0
    constants = {k: tf.constant(v) for k, v in params.as_dict().items()}
    rules = {"min_brightness": 0.0, "min_sharpness": 0.0, "sharpness_rule": False}
    far = _signals(rng, 5, shift=4.0)
    out = gate_batch(constants, rules, far["features"], far["measures"])
    assert (out["quality"].numpy() == 0).all() and np.isnan(out["fundus_distance"]).all()


def test_the_fit_rejects_at_most_its_share_of_validation_and_far_inputs():
    rng = np.random.default_rng(0)
    train = _signals(rng, 400, ungradable=40)
    val = _signals(rng, 200, ungradable=20)
    cfg = QualityConfig(max_rejected_fundus=0.01, max_withheld_gradable=0.02)
    params = fit_gate(train, val, cfg)
    constants = {k: tf.constant(v) for k, v in params.as_dict().items()}
    rules = {"min_brightness": 0.0, "min_sharpness": 0.0, "sharpness_rule": False}

    def verdicts(signals):
        out = gate_batch(constants, rules, signals["features"], signals["measures"])
        return {k: v.numpy() for k, v in out.items()}

    on_val = verdicts(val)
    assert (on_val["quality"] == 2).mean() <= 0.01  # not_fundus
    gradable = val["gradable"] == 1
    assert ((on_val["quality"] == 1) & gradable).sum() <= 0.02 * gradable.sum()
    far = verdicts(_signals(rng, 50, shift=4.0))
    assert (far["quality"] == 2).all()
    # the learnt score ranks the less sharp scans lower
    assert on_val["quality_score"][~gradable].mean() < on_val["quality_score"][gradable].mean()


def test_an_unfitted_gate_applies_the_rules_only():
    params = GateParams.empty(16, 8)
    constants = {k: tf.constant(v) for k, v in params.as_dict().items()}
    rules = {"min_brightness": 20.0, "min_sharpness": 3.9, "sharpness_rule": True}
    images = np.stack([_fundus_like(), np.zeros((128, 128, 3), np.uint8), _fundus_like(blur=6)])
    measures = image_measures(tf.constant(images))
    out = gate_batch(constants, rules, tf.zeros((3, 16)), measures)
    codes, flags = out["quality"].numpy().tolist(), out["quality_flags"].numpy().tolist()
    assert codes == [0, 1, 1]
    names = [VERDICTS[code] for code in codes]
    reasons = [reasons_of(f, v) for f, v in zip(flags, names, strict=True)]
    assert reasons == ["", "no field of view", "too blurred"]
    assert np.isnan(out["quality_score"].numpy()).all()


def test_the_summary_reports_the_score_against_the_graders_and_the_rules():
    rng = np.random.default_rng(1)
    n = 200
    graders = (rng.random(n) > 0.1).astype(int)
    table = pd.DataFrame(
        {
            "scan_id": [f"s{i}" for i in range(n)],
            "patient": [f"p{i // 2}" for i in range(n)],
            "site": rng.choice(["A", "B"], n),
            "graders_gradable": graders,
            "quality_score": np.where(graders == 1, 0.8, 0.3) + rng.normal(0, 0.1, n),
            "quality_flags": np.where((graders == 0) & (rng.random(n) < 0.5), 4, 0),
        }
    )
    table["quality"] = np.where(table["quality_flags"] > 0, "ungradable", "gradable")
    table["quality_reasons"] = np.where(table["quality_flags"] > 0, "too blurred", "")
    summary = gate_summary(table, "retake", True, n_resamples=200)
    record = summary["against_graders"]
    assert record["score_auc"]["value"] > 0.95
    assert record["score_auc"]["low"] <= record["score_auc"]["value"] <= record["score_auc"]["high"]
    assert record["rules"]["specificity"]["value"] == 1.0
    assert 0.2 < record["rules"]["sensitivity"]["value"] < 0.8
    assert summary["gradable_withheld"] == 0 and set(summary["per_site"]) == {"A", "B"}
    assert summary["reasons"] == {"too blurred": summary["withheld"]}


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    """One epoch of the smoke preset whose gate may withhold a fifth of validation's scans:
    with its 5 validation scans, 1% promises nothing and the default gate is the rules."""
    from conftest import smoke_config
    from retina.training.loop import train

    run_dir = tmp_path_factory.mktemp("quality") / "run"
    budget = ["quality.max_rejected_fundus=0.2", "quality.max_withheld_gradable=0.2"]
    train(
        smoke_config(shared_data, ["train.epochs=1", "train.evaluate_test=false", *budget]), run_dir
    )
    return run_dir


@pytest.fixture(scope="module")
def mix(run, shared_data, tmp_path_factory):
    """The benchmark's held-out mix, small: the run's test scans, their lesion masks, five
    photographs, the blank and text pages."""
    manifest = pd.read_csv(run / "manifest.csv", dtype=str)
    test = manifest[manifest["split"] == "test"]
    data = shared_data / "synthetic"
    masks = sorted(
        p for p in (data / "lesion_masks").rglob("*.png") if p.stem in set(test["scan_id"])
    )
    chosen = dict(list(photographs().items())[:10:2])
    folder = tmp_path_factory.mktemp("mix")
    files = {"fundus": [data / p for p in test["path"]], "mask": masks[:4]}
    return folder, write_mix(folder, files, chosen, pages())


def test_predict_evaluate_and_the_saved_model_agree_on_every_verdict(run, mix, tmp_path):
    from retina.evaluation.held_out import evaluate_run
    from retina.serving.artifacts import export_run
    from retina.serving.unlabeled import predict_scans

    folder, kinds = mix
    predicted = pd.read_csv(
        predict_scans(run, folder, "latest", output_dir=tmp_path, paths_in_outputs="keep"),
        keep_default_na=False,
    )
    figures = mix_figures(predicted, kinds)
    assert figures["non_fundus_caught_share"] == 1.0, figures["per_kind"]
    held = predicted[predicted["quality"] != "gradable"]
    assert (held["predicted_grade"] == "").all() and (held["referable_probability"] == "").all()
    assert (held["decision"] == "retake").all()
    # evaluate: the same verdict for every test scan
    metrics = evaluate_run(run, checkpoint="latest", n_resamples=20)
    evaluated = pd.read_csv(
        run / "eval" / f"{metrics['checkpoint']}-test" / "predictions.csv", keep_default_na=False
    )
    by_id = predicted.assign(scan_id=predicted["path"].str.rsplit(".", n=1).str[0])
    joined = evaluated.merge(by_id, on="scan_id", suffixes=("_evaluate", "_predict"))
    assert len(joined) == len(evaluated) > 0
    assert (joined["quality_evaluate"] == joined["quality_predict"]).all()
    assert metrics["eye_level"]["n"] == (evaluated["quality"] == "gradable").sum()
    # the SavedModel, alone in a fresh process, on the same cached images
    cached = predicted[predicted["quality_reasons"] != "no field of view"]
    out_dir = export_run(run, "saved_model", checkpoint="latest", output_dir=tmp_path / "export")
    card = (out_dir / "model_card.md").read_text()
    assert "## Quality gate" in card and "graders' gradable scans withheld" in card
    assert json.loads((out_dir / "serving.json").read_text())["quality_gate"]["fitted"]
    script = textwrap.dedent(f"""
        import json, sys
        import pandas as pd, tensorflow as tf
        from retina.data.cache import build_cache
        from retina.data.pipeline import decode_cached
        from retina.run_dir import load_run_config
        cfg = load_run_config("{run}/config.yaml")
        rows = pd.DataFrame({{"path": {cached["path"].tolist()!r}}})
        paths = build_cache(rows, "{folder}", cfg.preprocess, cfg.data.cache_dir)[0]["cache_path"]
        images = tf.stack([decode_cached(p) for p in paths])
        out = tf.saved_model.load("{out_dir}/saved_model").signatures["serving_default"](
            images=tf.cast(images, tf.uint8))
        json.dump([[v.decode() for v in out["quality_name"].numpy()],
                   out["predicted_grade"].numpy().tolist()], sys.stdout)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts, grades = json.loads(done.stdout.strip().splitlines()[-1])
    assert verdicts == cached["quality"].tolist()
    assert [g for g, v in zip(grades, verdicts, strict=True) if v != "gradable"] == [-1] * sum(
        v != "gradable" for v in verdicts
    )


def test_the_checkpoint_holds_the_gate_and_the_report_says_what_it_withheld(run):
    from retina.checkpoint.read import find_checkpoint, read_quality
    from retina.evaluation.held_out import evaluate_run

    values = read_quality(find_checkpoint(run, "latest"))
    assert values["fitted"] == 1 and values["novelty_threshold"] > 0
    metrics = evaluate_run(run, checkpoint="latest", n_resamples=20)
    folder = run / "eval" / f"{metrics['checkpoint']}-test"
    gate = metrics["quality_gate"]
    assert gate["scans"] == sum(gate["verdicts"].values()) and gate["fitted"]
    report = (folder / "report.md").read_text()
    assert "## Quality gate" in report and "graders' gradable scans withheld" in report
    assert "Quality gate</h2>" in (folder / "report.html").read_text()
    ungradable = pd.read_csv(run / "ungradable_scans.csv", dtype=str)
    manifest = pd.read_csv(run / "manifest.csv", dtype=str)
    split_of = manifest.drop_duplicates("patient").set_index("patient")["split"]
    shared = ungradable[ungradable["patient"].isin(split_of.index)]
    assert (shared["split"] == shared["patient"].map(split_of)).all()
    assert not set(ungradable["scan_id"]) & set(manifest["scan_id"])


@pytest.mark.parametrize("key", ["max_withheld_gradable", "max_rejected_fundus"])
def test_a_share_outside_zero_to_one_is_refused_naming_its_key(key):
    from retina.errors import ConfigError
    from retina.quality.fit import check_shares

    with pytest.raises(ConfigError, match=f"quality.{key}=1.5"):
        check_shares(QualityConfig(**{key: 1.5}))


@pytest.mark.parametrize(
    ("validation", "gradable", "shares", "possible"),
    [
        (6, 5, (0.01, 0.01), False),  # debug=smoke: the rules alone, nothing read
        (99, 90, (0.01, 0.01), True),  # the not-a-fundus threshold's first rank
        (98, 98, (0.01, 0.01), False),
        (6, 5, (0.2, 0.01), True),  # a looser budget makes a threshold possible
    ],
)
def test_the_fit_is_skipped_only_when_no_threshold_can_hold_its_share(
    validation, gradable, shares, possible
):
    cfg = QualityConfig(max_rejected_fundus=shares[0], max_withheld_gradable=shares[1])
    assert can_hold_a_share(validation, gradable, cfg) == possible
