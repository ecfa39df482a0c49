"""Explanations: Grad-CAM on every model family, its sanity checks against the lesion masks,
occlusion beside it, and the explain entry point."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import LESION_RUN, compose_config, smoke_config
from retina.config import ExplainConfig, ModelConfig, to_typed
from retina.errors import ConfigError
from retina.explanations.overlays import explain_run
from retina.explanations.saliency import feature_map_model, grad_cam, occlusion
from retina.explanations.sanity_checks import lesion_mass_ratio, rank_correlation
from retina.files import read_json
from retina.models import build_model
from retina.models.grading import Grading, attach_grading
from retina.models.heads import pool_feature_map, pooling_of
from retina.run_dir import SANITY_FILE
from retina.training.loop import train

FAMILIES = ["small_cnn", "resnet50", "efficientnet_b0", "inception_v3"]
LARGER_EFFICIENTNETS = ["efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4"]


def _images(size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)


@pytest.fixture
def mixed_float16():
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


def class_activation_maps(model, images) -> np.ndarray:
    """Zhou et al.'s CAM, (grades, scans, h, w): for a head that pools linearly, Grad-CAM of
    a grade's logit equals it (the gradient at every position is the logit weight over h*w;
    for small_cnn's average+max head, the two halves of the kernel add), so it is an
    independent reference."""
    feature_map = feature_map_model(model)(images).numpy().astype(np.float64)
    kernel = model.get_layer("head_logits").kernel.numpy()
    channels = feature_map.shape[-1]
    weights = kernel[:channels] + (kernel[channels:] if pooling_of(model) == "avg_max" else 0)
    cams = np.einsum("bhwc,cg->gbhw", feature_map, weights) / np.prod(feature_map.shape[1:3])
    return np.maximum(cams, 0)


def _check_grad_cam(name: str) -> None:
    """The head applied by hand gives the model's own logits; Grad-CAM of the grade with the
    most positive evidence equals the CAM reference on the feature-map grid."""
    size = 75 if name == "inception_v3" else 64
    model, images = build_model(ModelConfig(name=name), size), _images(size)
    feature_map = tf.cast(feature_map_model(model)(images), tf.float32)
    by_hand = model.get_layer("head_logits")(pool_feature_map(feature_map, pooling_of(model)))
    np.testing.assert_allclose(by_hand, model(images, training=False), rtol=1e-4, atol=1e-4)
    reference = class_activation_maps(model, images)
    grade = int(reference.max(axis=(1, 2, 3)).argmax())
    assert reference[grade].max() > 0
    maps = grad_cam(model, images, target=str(grade))
    assert maps.shape == (2, size, size) and np.isfinite(maps).all() and (maps >= 0).all()
    grid = feature_map.shape[1:3]
    expected = tf.image.resize(reference[grade][..., None], (size, size))[..., 0].numpy()
    np.testing.assert_allclose(maps, expected, rtol=1e-3, atol=1e-6 * reference.max())
    assert grid[0] < size  # a real feature map, smaller than the scan


@pytest.mark.parametrize("name", FAMILIES)
def test_grad_cam_runs_on_every_model_family(name):
    _check_grad_cam(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGER_EFFICIENTNETS)
def test_grad_cam_runs_on_the_larger_efficientnets(name):
    _check_grad_cam(name)


@pytest.mark.parametrize("name", ["small_cnn", "efficientnet_b0"])
def test_grad_cam_under_mixed_float16_gives_finite_maps(name, mixed_float16):
    model, images = build_model(ModelConfig(name=name), 64), _images(64)
    assert model.get_layer("head_pool").compute_dtype == "float16"
    reference = class_activation_maps(model, images)
    grade = int(reference.max(axis=(1, 2, 3)).argmax())  # a grade with positive evidence
    maps = grad_cam(model, images, target=str(grade))
    assert np.isfinite(maps).all() and maps.max() > 0


def test_the_checks_score_hand_made_maps():
    lesions = np.zeros((10, 10), np.float32)
    lesions[:2, :5] = 1  # 10% of the field of view
    fov = np.ones((10, 10), np.float32)
    assert lesion_mass_ratio(lesions, lesions, fov) == pytest.approx(10.0)
    assert lesion_mass_ratio(np.ones((10, 10)), lesions, fov) == pytest.approx(1.0)
    assert np.isnan(lesion_mass_ratio(np.zeros((10, 10)), lesions, fov))
    ramp = np.arange(100.0).reshape(10, 10)
    assert rank_correlation(ramp, ramp**2) == pytest.approx(1.0)
    assert rank_correlation(ramp, -ramp) == pytest.approx(-1.0)
    assert rank_correlation(ramp, np.zeros((10, 10))) == 0.0


def test_grad_cam_finds_the_lesions_and_fails_model_randomisation(lesion_run):
    """The sanity checks, on the held-out referable scans of a briefly trained
    model: lesion-mass ratio >= 2 and rank correlation with a randomised model <= 0.5."""
    out = explain_run(ExplainConfig(run_dir=str(lesion_run), sanity_checks=True))
    checks = read_json(out / SANITY_FILE)
    ratio = checks["lesion_mass_ratio"]["mean"]
    correlation = checks["randomised_rank_correlation"]["mean"]
    print(
        f"Grad-CAM on {checks['scans']} referable test scans: lesion-mass ratio {ratio:.2f}, "
        f"rank correlation with a randomised model {correlation:.3f}"
    )
    assert checks["scans"] >= 10
    assert ratio >= 2.0 and correlation <= 0.5 and checks["passed"]
    table = pd.read_csv(out / "explanations.csv")
    # the quality gate's withheld scans get no overlay; every other scan one that exists
    assert (table["overlay"].isna() == (table["quality"] != "gradable")).all()
    overlays = table["overlay"].dropna()
    assert len(overlays) and (out / overlays).map(lambda p: p.is_file()).all()
    assert (
        table["lesion_mass_ratio"].notna().sum()
        == checks["scans"] - checks["lesion_mass_ratio"]["undefined"]
    )


def test_grad_cam_on_a_vision_transformer_fails_model_randomisation(lesion_run, tmp_path):
    """A small ViT (8-px patches: a 12x12 token grid at 96 px) trained on the lesion run's
    data: its Grad-CAM on the patch tokens is unlike a randomised ViT's. The lesion-mass
    ratio is reported, not required: a ViT's last tokens have mixed in the whole image
    through attention (docs/explanations.md)."""
    vit = ["model=vit", "model.patch_size=8", "model.width=64", "model.depth=4", "model.heads=4"]
    data = lesion_run.parent
    cfg = smoke_config(
        tmp_path, [*LESION_RUN, *vit, "optimizer=adamw"], data_root=data / "synthetic"
    )
    train(replace(cfg, data=replace(cfg.data, cache_dir=str(data / "cache"))), tmp_path / "run")
    out = explain_run(ExplainConfig(run_dir=str(tmp_path / "run"), sanity_checks=True))
    checks = read_json(out / SANITY_FILE)
    correlation = checks["randomised_rank_correlation"]["mean"]
    print(
        f"ViT Grad-CAM on {checks['scans']} referable test scans: lesion-mass ratio "
        f"{checks['lesion_mass_ratio']['mean']:.2f}, rank correlation with a randomised "
        f"ViT {correlation:.3f}"
    )
    assert checks["scans"] >= 10 and correlation <= 0.5
    table = pd.read_csv(out / "explanations.csv")
    assert (out / table["overlay"]).map(lambda p: p.is_file()).all()


@pytest.mark.slow  # 19 s: 225 passes per scan
def test_occlusion_finds_the_lesions_too(lesion_run):
    """The second method, for comparison: printed beside Grad-CAM's figure."""
    out = explain_run(
        ExplainConfig(
            run_dir=str(lesion_run),
            method="occlusion",
            sanity_checks=True,
            output_dir=str(lesion_run.parent / "occlusion"),
        )
    )
    checks = read_json(out / SANITY_FILE)
    print(
        f"Occlusion: lesion-mass ratio {checks['lesion_mass_ratio']['mean']:.2f}, "
        f"randomised correlation {checks['randomised_rank_correlation']['mean']:.3f}"
    )
    assert checks["lesion_mass_ratio"]["mean"] > 1.0


def test_occlusion_map_marks_the_square_that_moves_the_score():
    """A model whose referable score is the brightness of one corner: occlusion peaks in that
    corner and is zero where no square reaches it."""
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    corner = keras.layers.Lambda(
        lambda x: tf.reduce_mean(tf.cast(x[:, :8, :8], tf.float32), [1, 2, 3])
    )(inputs)
    logits = keras.layers.Lambda(lambda s: tf.stack([tf.zeros_like(s), s], -1), name="head_logits")(
        corner
    )
    model = attach_grading(keras.Model(inputs, logits), Grading("referable"))
    image = np.zeros((32, 32, 3), np.uint8)
    image[:8, :8] = 255
    saliency = occlusion(model, image, patches=4)
    peak = np.unravel_index(saliency.argmax(), saliency.shape)
    assert peak[0] < 8 and peak[1] < 8
    assert saliency[16:, :].max() == 0 and saliency[:, 16:].max() == 0


def test_explain_config_writes_overlays_named_by_scan_id(smoke_run, tmp_path):
    """explain.yaml composed by Hydra as the entry point does, then run."""
    out = tmp_path / "explained"
    overrides = [f"run_dir={smoke_run}", "limit=3", "targets=[referable,3]", f"output_dir={out}"]
    explain_run(to_typed(compose_config("explain", overrides)))
    table = pd.read_csv(out / "explanations.csv")
    manifest = pd.read_csv(smoke_run / "manifest.csv", dtype=str)
    assert len(table) == 6 and set(table["target"].astype(str)) == {"referable", "3"}
    assert set(table["scan_id"]) <= set(manifest["scan_id"])
    assert all((out / name).is_file() for name in table["overlay"])


def test_explain_names_a_target_the_head_has_not(smoke_run):
    with pytest.raises(ConfigError, match="target='7'"):
        explain_run(ExplainConfig(run_dir=str(smoke_run), targets=["7"]))


def test_sanity_checks_on_unlabelled_input_are_refused_before_any_work(smoke_run, tmp_path):
    options = ExplainConfig(run_dir=str(smoke_run), input=str(tmp_path), sanity_checks=True)
    with pytest.raises(ConfigError, match="drop input="):
        explain_run(options)
    assert not (smoke_run / "explain").exists()
