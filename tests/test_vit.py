"""Vision Transformers in RETFound's layout, and RETFound's weights read without PyTorch.

The fixture (tests/fixtures/retfound_tiny/, a few KB) was made by RETFound's own model code
with PyTorch in a throwaway environment: ``make_fixture.py`` there says how; the project
never imports PyTorch.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

from retina.config import ModelConfig
from retina.errors import ConfigError
from retina.models import build_model
from retina.models.foreign_weights import read_state_dict, resize_position_embedding

FIXTURE = Path(__file__).parent / "fixtures" / "retfound_tiny"
TINY = dict(name="vit", patch_size=8, width=16, depth=2, heads=2)


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURE / "expected.npz") as archive:
        return dict(archive)


def _features(weights: Path, size: int = 32):
    """The model built with these weights, and the features its head reads for the
    fixture's images (None at another size)."""
    model = build_model(ModelConfig(**TINY, weights=str(weights)), size)
    with np.load(FIXTURE / "expected.npz") as archive:
        images = archive["images"]
    if size != images.shape[1]:
        return model, None
    features_of = keras.Model(model.input, model.get_layer("head_dropout").input)
    return model, np.asarray(features_of(images, training=False))


def test_retfound_weights_give_retfounds_outputs(expected):
    """The features RETFound's head reads, and its logits from them (the loader drops the
    head, as fine-tuning does; its weights are applied here by hand)."""
    _, features = _features(FIXTURE / "retfound_tiny.pth")
    np.testing.assert_allclose(features, expected["features"], atol=1e-5, rtol=0)
    state = read_state_dict(FIXTURE / "retfound_tiny.pth")
    logits = features @ state["head.weight"].T + state["head.bias"]
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-5, rtol=0)


def test_safetensors_and_npz_of_the_same_weights_give_identical_outputs(tmp_path):
    state = read_state_dict(FIXTURE / "retfound_tiny.pth")
    save_file(state, tmp_path / "weights.safetensors")
    np.savez(tmp_path / "weights.npz", **state)
    _, from_pth = _features(FIXTURE / "retfound_tiny.pth")
    for name in ("weights.safetensors", "weights.npz"):
        np.testing.assert_array_equal(_features(tmp_path / name)[1], from_pth)


def test_the_position_embedding_is_resized_as_retfound_resizes_it(expected):
    state = read_state_dict(FIXTURE / "retfound_tiny.pth")
    resized = resize_position_embedding(state["pos_embed"], 6)
    np.testing.assert_allclose(resized, expected["pos_embed_6x6"], atol=1e-6, rtol=0)
    model, _ = _features(FIXTURE / "retfound_tiny.pth", size=48)  # a 6 x 6 grid
    np.testing.assert_allclose(
        model.get_layer("tokens").pos_embed.numpy(), expected["pos_embed_6x6"], atol=1e-6
    )


class _RunsACommand:
    def __reduce__(self):
        import os

        return os.system, ("touch /tmp/retina-hostile-pth-ran",)


def test_a_pth_whose_pickle_would_run_code_is_refused_before_anything_runs(tmp_path):
    marker = Path("/tmp/retina-hostile-pth-ran")
    marker.unlink(missing_ok=True)
    hostile = tmp_path / "hostile.pth"
    with zipfile.ZipFile(hostile, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"model": _RunsACommand()}))
        archive.writestr("archive/byteorder", "little")
    with pytest.raises(ConfigError, match=r"refused, before running anything.*(posix|os)\.system"):
        read_state_dict(hostile)
    assert not marker.exists()


def _saved(tmp_path, state) -> Path:
    path = tmp_path / "changed.npz"
    np.savez(path, **state)
    return path


def test_a_missing_key_fails_naming_it(tmp_path):
    state = read_state_dict(FIXTURE / "retfound_tiny.pth")
    del state["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ConfigError, match=r"lacks: blocks\.1\.mlp\.fc2\.bias"):
        _features(_saved(tmp_path, state))


def test_a_misshapen_key_fails_naming_it(tmp_path):
    state = read_state_dict(FIXTURE / "retfound_tiny.pth")
    state["blocks.0.mlp.fc1.weight"] = state["blocks.0.mlp.fc1.weight"][:, :8]
    with pytest.raises(ConfigError, match=r"blocks\.0\.mlp\.fc1\.weight has shape \(64, 8\)"):
        _features(_saved(tmp_path, state))


def test_a_misshapen_fused_projection_fails_naming_it(tmp_path):
    state = read_state_dict(FIXTURE / "retfound_tiny.pth")
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"][:40]
    with pytest.raises(ConfigError, match=r"blocks\.0\.attn\.qkv\.weight has shape \(40, 16\)"):
        _features(_saved(tmp_path, state))


def test_an_unknown_key_fails_naming_it(tmp_path):
    state = read_state_dict(FIXTURE / "retfound_tiny.pth")
    state["blocks.2.attn.qkv.weight"] = state["blocks.1.attn.qkv.weight"]
    with pytest.raises(ConfigError, match=r"no place for: blocks\.2\.attn\.qkv\.weight"):
        _features(_saved(tmp_path, state))


def test_a_fixed_shape_refuses_other_keys():
    with pytest.raises(ConfigError, match=r"model\.depth=4 \(it has 24\)"):
        build_model(ModelConfig(name="vit_large_patch16", patch_size=16, width=1024, heads=16), 224)


def test_an_image_size_off_the_patch_grid_is_refused():
    with pytest.raises(ConfigError, match="not a multiple"):
        build_model(ModelConfig(**TINY), 36)


def test_drop_path_drops_whole_samples_in_training_only():
    model = build_model(ModelConfig(**TINY, drop_path=0.5, dropout=0.0), 32)
    images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    inference = [np.asarray(model(images, training=False)) for _ in range(2)]
    training = [np.asarray(model(images, training=True)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    assert not np.allclose(training[0], training[1])  # other samples' branches dropped
    unchanged = build_model(ModelConfig(**TINY, drop_path=0.0, dropout=0.0), 32)
    np.testing.assert_array_equal(
        np.asarray(unchanged(images, training=True)), np.asarray(unchanged(images, training=False))
    )


def _one_sgd_step(layer_decay: float, weight_decay: float = 0.0, name: str = "sgd"):
    """Each variable's change after one step of all-ones gradients at rate 1 (momentum 0)."""
    import tensorflow as tf

    from retina.config import OptimizerSpec, ScheduleConfig
    from retina.training.optimizers import RateSetup, build_all, build_optimizer

    model = build_model(ModelConfig(**TINY), 32)
    spec = OptimizerSpec(
        name=name,
        learning_rate=1.0,
        momentum=0.0,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
    )
    optimizer = build_optimizer(
        spec, "float32", RateSetup(ScheduleConfig(), 1, 1, tf.Variable(1.0))
    )
    variables = list(model.trainable_variables)
    build_all({"all": optimizer}, {"all": variables}, model)
    before = [np.array(v.numpy()) for v in variables]
    optimizer.apply_gradients([(tf.ones_like(v), v) for v in variables])
    return {v.path: before[i] - v.numpy() for i, v in enumerate(variables)}, before


# Two blocks, decay 0.5: RETFound's param_groups_lrd gives these rate scales.
RETFOUND_SCALES = {
    "patch_embed": 0.125,
    "tokens": 0.125,
    "block_0": 0.25,
    "block_1": 0.5,
    "head_": 1,
}


def _retfound_scale(path: str) -> float:
    return next(scale for prefix, scale in RETFOUND_SCALES.items() if path.startswith(prefix))


def test_layer_decay_gives_each_block_retfounds_rate():
    """Without decay every variable moves by the full rate."""
    changes, _ = _one_sgd_step(0.5)
    for path, change in changes.items():
        np.testing.assert_allclose(change, _retfound_scale(path), rtol=1e-6, err_msg=path)
    plain, _ = _one_sgd_step(1.0)
    assert all(np.allclose(change, 1.0) for change in plain.values())


def test_layer_decay_scales_adamws_decoupled_weight_decay_on_kernels_only():
    """Adam's first step of a constant gradient moves by the rate; the decay shrinks
    kernels by weight_decay x the same scaled rate (PyTorch's AdamW per parameter group)."""
    changes, before = _one_sgd_step(0.5, weight_decay=0.1, name="adamw")
    for (path, change), start in zip(changes.items(), before, strict=True):
        rate = _retfound_scale(path)
        decay = start * 0.1 * rate if path.endswith("kernel") else 0.0
        np.testing.assert_allclose(change, rate + decay, rtol=1e-4, atol=1e-6, err_msg=path)


def test_layer_decay_is_refused_for_a_cnn():
    from retina.training.layer_decay import layer_scales

    with pytest.raises(ConfigError, match=r"optimizer\.layer_decay=0\.65 .* model\.name=small_cnn"):
        layer_scales(build_model(ModelConfig(), 64), 0.65)


@pytest.fixture(scope="module")
def probe_run(shared_data, tmp_path_factory):
    """A smoke run probing RETFound's tiny weights (as .npz) linearly, with the source and
    licence a user states; its config and the run directory."""
    from conftest import smoke_config
    from retina.training.loop import train

    tmp = tmp_path_factory.mktemp("probe")
    weights = tmp / "retfound.npz"
    np.savez(weights, **read_state_dict(FIXTURE / "retfound_tiny.pth"))
    shape = [f"model.{key}={value}" for key, value in TINY.items() if key != "name"]
    overrides = [
        "model=vit",
        *shape,
        f"model.weights={weights}",
        "model.weights_source='RETFound (tiny test fixture)'",
        "model.weights_licence='CC BY-NC 4.0'",
        "train.adaptation=linear_probe",
    ]
    cfg = smoke_config(shared_data, overrides)
    train(cfg, tmp / "run")
    return cfg, tmp / "run"


def test_a_linear_probe_trains_the_last_layer_only(probe_run):
    """RETFound's weights under train.adaptation=linear_probe: after training, every weight
    but head_logits' is the file's (head_norm too, as RETFound's probe freezes fc_norm)."""
    from retina.inference.restore import load_run_model

    cfg, run_dir = probe_run
    _, trained, _ = load_run_model(run_dir, "latest")
    loaded = build_model(cfg.model, cfg.preprocess.image_size)
    for before, after in zip(loaded.weights, trained.weights, strict=True):
        if before.path.startswith("head_logits"):
            assert not np.array_equal(before.numpy(), after.numpy()), before.path
        else:
            np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=before.path)


def test_the_weights_file_is_named_hashed_and_licensed_in_config_report_and_card(probe_run):
    """config.yaml keeps the file's SHA-256; report.html and the model card name the
    backbone's starting weights by file name (not folder), source, licence and hash."""
    from retina.checkpoint import find_checkpoint
    from retina.evaluation.held_out import evaluate_run
    from retina.files import file_sha256
    from retina.reports.model_card import write_model_card
    from retina.run_dir import REPORT_HTML_FILE, evaluation_dir, load_run_config

    cfg, run_dir = probe_run
    digest = file_sha256(Path(cfg.model.weights))
    saved = load_run_config(run_dir)
    assert saved.model.weights_sha256 == digest
    checkpoint = find_checkpoint(run_dir)
    evaluate_run(run_dir, n_resamples=20)
    report = evaluation_dir(run_dir, checkpoint.name, "test") / REPORT_HTML_FILE
    card = write_model_card(run_dir, run_dir, saved, checkpoint)
    expected = (
        f"retfound.npz (RETFound (tiny test fixture); licence CC BY-NC 4.0; SHA-256 {digest})"
    )
    for text in (card.read_text(), report.read_text()):
        assert expected in text
        assert str(Path(cfg.model.weights).parent) not in text


def test_grad_cam_reads_the_patch_grid_through_the_whole_head():
    """Grad-CAM's hand-applied head (pooling, fc_norm twice, logits) gives the model's own
    logits, and its map covers the image from the 4 x 4 patch grid."""
    import tensorflow as tf

    from retina.explanations.saliency import feature_map_model, grad_cam
    from retina.models.heads import logits_from_pooled, pool_feature_map

    model, _ = _features(FIXTURE / "retfound_tiny.pth")
    with np.load(FIXTURE / "expected.npz") as archive:
        images = archive["images"]
    grid = feature_map_model(model)(images, training=False)
    assert tuple(grid.shape[1:3]) == (4, 4)
    by_hand = logits_from_pooled(model)(pool_feature_map(tf.convert_to_tensor(grid), "avg"))
    np.testing.assert_allclose(by_hand, model(images, training=False), atol=1e-6)
    maps = grad_cam(model, images)
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all() and maps.max() > 0
