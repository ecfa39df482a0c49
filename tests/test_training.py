"""The training loop's options on real smoke runs: schedules, losses, sampler, stream,
mixed precision skips, clipping, EMA, freezing, multi-step calls, TensorBoard."""

import math
from dataclasses import replace

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import compose_config, smoke_config
from retina.checkpoint import find_checkpoint, restore_weights
from retina.checkpoint.state import averaged_variables
from retina.config import LossConfig, ScheduleConfig, to_typed
from retina.data.mixing import mix_batch
from retina.data.pipeline import StreamOptions, make_train_dataset
from retina.errors import ConfigError
from retina.models import build_model, without_pretrained
from retina.training.loop import train
from retina.training.losses import class_weights, make_loss
from retina.training.schedules import schedule_factor
from retina.training.session import open_session
from retina.training.steps import batchnorm_statistics

NO_EVAL = "train.evaluate_test=false"


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "name, warmup, step, expected",
    [
        ("constant", 0, 0, 1.0),
        ("constant", 2, 0, 1 / 20),  # warmup: (step + 1) / (2 epochs x 10 steps)
        ("constant", 2, 19, 1.0),
        ("warmup_cosine", 0, 0, 1.0),
        ("warmup_cosine", 0, 50, 0.01 + 0.99 * 0.5),  # halfway: cosine at pi/2
        ("warmup_cosine", 0, 100, 0.01),  # the floor at the last step
        ("warmup_cosine", 2, 9, 0.5),  # in warmup, cosine not started
        ("warmup_cosine", 2, 60, 0.01 + 0.99 * 0.5),  # halfway through the 80 decay steps
        ("step", 0, 29, 1.0),
        ("step", 0, 30, 0.1),  # boundary at epoch 3
        ("step", 0, 70, 0.01),  # and at epoch 7
    ],
)
def test_schedule_factor(name, warmup, step, expected):
    cfg = ScheduleConfig(name=name, warmup_epochs=warmup, min_fraction=0.01, boundaries=[3, 7])
    factor = float(schedule_factor(cfg, step, steps_per_epoch=10, total_steps=100))
    assert factor == pytest.approx(expected, rel=1e-5)


def test_learning_rate_follows_the_schedule_in_a_run(tmp_path, shared_data):
    cfg = smoke_config(shared_data, ["schedule=warmup_cosine", "train.epochs=2", NO_EVAL])
    train(cfg, tmp_path)
    optimizer = open_session(cfg, tmp_path).state.optimizers["all"]
    # 10 steps, 1 warmup epoch of 5: cosine over 5 more, at its floor after step 10.
    assert float(optimizer.learning_rate) == pytest.approx(1e-3 * 0.01, rel=1e-4)


# ----------------------------------------------------------------------------- losses


def test_label_smoothing_matches_hand_computed_cross_entropy():
    logits = tf.constant([[2.0, 0.0, 0.0, 0.0, 0.0]])
    loss = make_loss(LossConfig(label_smoothing=0.1), "softmax", 5, np.arange(5))
    log_p = np.log(np.exp([2.0, 0, 0, 0, 0]) / np.exp([2.0, 0, 0, 0, 0]).sum())
    target = np.array([0.92, 0.02, 0.02, 0.02, 0.02])
    assert float(loss(tf.constant([0]), logits)) == pytest.approx(-(target * log_p).sum(), 1e-5)


def test_class_weights_balanced_and_manual():
    targets = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(class_weights("balanced", targets, 3), [6 / 9, 6 / 3, 6 / 6])
    np.testing.assert_allclose(class_weights("1,2,3", targets, 3), [1, 2, 3])
    assert class_weights("none", targets, 3) is None
    for bad in ("1,2", "a,b,c", "1,-1,1"):
        with pytest.raises(ConfigError, match="loss.class_weights"):
            class_weights(bad, targets, 3)


def test_weighted_loss_is_the_weighted_mean():
    logits = tf.constant([[1.0, 0.0], [0.0, 3.0]])
    loss = make_loss(LossConfig(class_weights="1,3"), "softmax", 2, np.array([0, 1]))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant([0, 1]), logits).numpy()
    assert float(loss(tf.constant([0, 1]), logits)) == pytest.approx((ce[0] + 3 * ce[1]) / 2)


def test_referable_head_trains_on_grade_two_or_more():
    loss = make_loss(LossConfig(), "referable", 2, np.array([0, 4]))
    confident_referable = tf.constant([[-9.0, 9.0]] * 3)
    assert float(loss(tf.constant([2, 3, 4]), confident_referable)) < 1e-3
    assert float(loss(tf.constant([0, 1, 1]), confident_referable)) > 10


# ----------------------------------------------------------------------------- stream


@pytest.fixture(scope="module")
def cached_scans(tmp_path_factory):
    """Twelve distinct 16-px PNGs with grades 0 (eight of them), 2 and 4."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("scans")
    paths = []
    for index in range(12):
        rng = np.random.default_rng(index)
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(path)
        paths.append(str(path))
    return paths, [0] * 8 + [2, 2, 4, 4]


def _take(dataset, count):
    iterator = iter(dataset)
    return [tuple(t.numpy() for t in next(iterator)) for _ in range(count)]


def test_memory_cache_yields_exactly_the_streamed_batches(cached_scans):
    paths, labels = cached_scans
    augment = compose_config("train", ["augment=strong"]).augment

    def stream(memory_mb):
        options = StreamOptions(memory_cache_mb=memory_mb)
        return make_train_dataset(paths, labels, 4, seed=3, augment=augment, options=options)

    for (a_images, a_labels), (b_images, b_labels) in zip(
        _take(stream(0), 6), _take(stream(64), 6), strict=True
    ):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)


def test_memory_cache_keeps_iterator_checkpoints_small(cached_scans, tmp_path):
    """``Dataset.cache()`` would write the whole decoded set into every checkpoint."""
    paths, labels = cached_scans
    iterator = iter(make_train_dataset(paths, labels, 4, 0, options=StreamOptions("shuffle", 64)))
    next(iterator)
    prefix = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "it"))
    size = sum(p.stat().st_size for p in tmp_path.glob("it*"))
    assert size < 4 * len(paths) * 16 * 16 * 3, size
    assert prefix


def test_balanced_sampler_draws_grades_equally_and_resumes_exactly(cached_scans, tmp_path):
    paths, labels = cached_scans
    options = StreamOptions(sampler="balanced")
    iterator = iter(make_train_dataset(paths, labels, 6, seed=1, options=options))
    drawn = np.concatenate([next(iterator)[1].numpy() for _ in range(100)])
    shares = np.bincount(drawn, minlength=5)[[0, 2, 4]] / len(drawn)
    np.testing.assert_allclose(shares, 1 / 3, atol=0.04)  # the data hold 2/3 grade 0
    prefix = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "it"))
    expected = [next(iterator)[1].numpy() for _ in range(5)]
    fresh = iter(make_train_dataset(paths, labels, 6, seed=1, options=options))
    tf.train.Checkpoint(iterator=fresh).read(prefix).assert_consumed()
    for labels_then in expected:
        np.testing.assert_array_equal(next(fresh)[1].numpy(), labels_then)


def test_unknown_sampler_is_refused(cached_scans):
    with pytest.raises(ConfigError, match="train.sampler"):
        make_train_dataset(*cached_scans, 4, 0, options=StreamOptions(sampler="oversample"))


# ----------------------------------------------------------------------------- the step


def _session(tmp_path, shared_data, *overrides):
    return open_session(smoke_config(shared_data, [NO_EVAL, *overrides]), tmp_path)


def _values(variables):
    return [v.numpy().copy() for v in variables]


def test_small_cnn_loss_goes_down_on_a_repeated_batch(tmp_path, shared_data):
    session = _session(tmp_path, shared_data, "augment=none")
    batch = next(session.iterator)
    repeated = iter(tf.data.Dataset.from_tensors(batch).repeat())
    losses, _, _ = session.train_function(0)(repeated, 30)
    losses = losses.numpy()
    assert losses[-3:].mean() < 0.6 * losses[:3].mean(), losses


@pytest.mark.parametrize("alphas", [(0.8, 0.0), (0.0, 1.0)], ids=["mixup", "cutmix"])
def test_the_step_trains_on_the_mixed_batch_and_its_mixed_loss(tmp_path, shared_data, alphas):
    """The loss the step reports is lam x loss(own grades) + (1 - lam) x loss(partners')
    on the batch mixed by the step's draw; step 0 and step 1 draw differently."""
    mixup_alpha, cutmix_alpha = alphas
    session = _session(
        tmp_path,
        shared_data,
        "augment=none",
        "model.dropout=0",
        f"augment.mixup_alpha={mixup_alpha}",
        f"augment.cutmix_alpha={cutmix_alpha}",
    )
    images, grades = next(session.iterator)
    repeated = iter(tf.data.Dataset.from_tensors((images, grades)).repeat())
    seed = tf.constant([session.cfg.seed, 0], tf.int64)
    mixed, own = mix_batch(images, seed, mixup_alpha, cutmix_alpha)
    assert 0 < float(own) < 1 and not np.array_equal(mixed, images)
    # The forward pass in training mode, as the step makes it, before the update.
    outputs = session.state.model(mixed, training=True)
    expected = own * session.loss(grades, outputs) + (1 - own) * session.loss(
        tf.reverse(grades, [0]), outputs
    )
    unmixed = session.loss(grades, session.state.model(images, training=True))
    losses, _, _ = session.train_function(0)(repeated, 2)
    assert float(losses[0]) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(losses[0]) - float(unmixed)) > 1e-3
    second, _ = mix_batch(images, tf.constant([session.cfg.seed, 1], tf.int64), *alphas)
    assert not np.array_equal(second, mixed)


def test_mixed_precision_skips_a_non_finite_step_without_a_trace(tmp_path, shared_data):
    """A loss scale of 2^40 overflows the float16 gradients: a real non-finite gradient."""
    session = _session(tmp_path, shared_data, "train.precision=mixed_float16")
    optimizer, model = session.state.optimizers["all"], session.state.model
    run = session.train_function(0)
    run(session.iterator, 1)  # an ordinary step first (at the initial 2^15 it may skip too)
    skipped = int(session.state.skipped_steps.numpy())
    assert batchnorm_statistics(model) and model.layers[2].compute_dtype == "float16"
    optimizer.dynamic_scale.assign(2.0**40)
    weights, statistics = _values(model.trainable_variables), _values(batchnorm_statistics(model))
    losses, _, applied = run(session.iterator, 1)
    assert math.isfinite(float(losses[0])) and not bool(applied[0])
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**39
    assert int(session.state.skipped_steps.numpy()) == skipped + 1
    for before, variable in zip(
        weights + statistics, model.trainable_variables + batchnorm_statistics(model), strict=True
    ):
        np.testing.assert_array_equal(before, variable.numpy(), variable.path)
    _, _, applied = run(session.iterator, 1)  # at 2^39 it still overflows ...
    while not bool(applied[0]):  # ... until the halved scale fits
        _, _, applied = run(session.iterator, 1)
    assert any(
        not np.array_equal(b, v.numpy())
        for b, v in zip(weights, model.trainable_variables, strict=True)
    )


def test_gradient_clipping_bounds_the_update(tmp_path, shared_data):
    clip = 1e-3
    session = _session(
        tmp_path,
        shared_data,
        "optimizer=sgd",
        "optimizer.momentum=0.0",
        "optimizer.learning_rate=1.0",
        f"optimizer.clip_global_norm={clip}",
        "model.dropout=0.0",
    )
    model = session.state.model
    before = _values(model.trainable_variables)
    session.train_function(0)(session.iterator, 1)
    change = np.sqrt(
        sum(
            ((v.numpy() - b) ** 2).sum()
            for v, b in zip(model.trainable_variables, before, strict=True)
        )
    )
    assert change == pytest.approx(clip, rel=1e-3)


def _scalar_values(run_dir, tag: str) -> dict[int, float]:
    values = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def test_steps_per_execution_changes_nothing_but_the_call_count(tmp_path, shared_data):
    losses = {}
    for every in (1, 4):
        run_dir = tmp_path / f"every-{every}"
        overrides = [
            "train.deterministic=true",
            f"train.steps_per_execution={every}",
            "train.log_every_steps=3",
            NO_EVAL,
        ]
        train(smoke_config(shared_data, overrides), run_dir)
        losses[every] = pd.read_csv(run_dir / "steps.csv")
    pd.testing.assert_frame_equal(losses[1], losses[4])
    assert len(losses[1]) == 10
    # TensorBoard: at the exact multiples of 3, though calls of 4 steps end at 4, 5, 9, 10;
    # each value the mean loss of the steps since the previous one.
    written = _scalar_values(tmp_path / "every-4", "train/loss")
    assert sorted(written) == [3, 6, 9]
    step_losses = losses[4].set_index("step")["loss"]
    for step, (first, last) in zip([3, 6, 9], [(1, 3), (4, 6), (7, 9)], strict=True):
        assert written[step] == pytest.approx(step_losses.loc[first:last].mean(), rel=1e-6)
    assert sorted(_scalar_values(tmp_path / "every-4", "learning_rate/all")) == [3, 6, 9]


def test_the_schedule_follows_the_global_step_when_steps_are_skipped(tmp_path, shared_data):
    session = _session(
        tmp_path,
        shared_data,
        "train.precision=mixed_float16",
        "schedule=warmup_cosine",
        "schedule.warmup_epochs=1",
    )
    optimizer = session.state.optimizers["all"]
    run = session.train_function(0)
    run(session.iterator, 1)
    optimizer.dynamic_scale.assign(2.0**40)  # overflows: the next steps are skipped
    run(session.iterator, 2)
    step, applied = int(session.state.step.numpy()), int(optimizer.iterations.numpy())
    assert step == 3 and applied < step
    cfg = session.cfg
    expected = cfg.optimizer.learning_rate * float(
        schedule_factor(cfg.schedule, step, session.steps_per_epoch, session.total_steps)
    )
    lagging = cfg.optimizer.learning_rate * float(
        schedule_factor(cfg.schedule, applied, session.steps_per_epoch, session.total_steps)
    )
    assert float(optimizer.learning_rate) == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(lagging, rel=1e-3)  # warm-up: the rate still rises


def test_rotation_fills_with_the_preprocessing_surround(tmp_path, shared_data):
    """Ben Graham's preprocessing paints the surround grey 128: rotated corners too."""
    from retina.config import AugmentConfig, PreprocessConfig
    from retina.data.augment import augment_image
    from retina.data.fundus import surround_value

    assert surround_value(PreprocessConfig(ben_graham=True)) == 128
    assert surround_value(PreprocessConfig()) == 0
    grey = tf.fill([32, 32, 3], tf.constant(128, tf.uint8))
    rotate = AugmentConfig(flip=False, rotation_degrees=45.0)
    seed = tf.constant([1, 2], tf.int64)
    assert int(augment_image(grey, seed, rotate, background=128)[0, 0, 0]) == 128
    assert int(augment_image(grey, seed, rotate)[0, 0, 0]) == 0
    session = _session(
        tmp_path,
        shared_data,
        "preprocess=ben_graham",
        "augment.rotation_degrees=45",
        "augment.flip=false",
    )
    images, _ = next(session.iterator)
    corners = images.numpy()[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 128).mean() > 0.9, corners


def test_jit_compiled_step_trains(tmp_path, shared_data):
    session = _session(tmp_path, shared_data, "train.jit_compile=true")
    losses, _, _ = session.train_function(0)(session.iterator, 2)
    assert np.isfinite(losses.numpy()).all()


# ----------------------------------------------------------------------------- EMA, freezing


def test_ema_weights_validate_are_saved_and_evaluated(tmp_path, shared_data):
    cfg = smoke_config(shared_data, ["train.ema_decay=0.9", "train.epochs=1", NO_EVAL])
    train(cfg, tmp_path)
    session = open_session(cfg, tmp_path)
    live = _values(session.state.model.variables)
    averages = [a.numpy() for a in session.state.ema.averages]
    assert any(
        not np.allclose(a, b)
        for a, b in zip(averages, _values(averaged_variables(session.state.model)), strict=True)
    )
    session.validate()  # swaps the averages in and back out
    for before, variable in zip(live, session.state.model.variables, strict=True):
        np.testing.assert_array_equal(before, variable.numpy())
    fresh = build_model(cfg.model, cfg.preprocess.image_size)
    restore_weights(fresh, find_checkpoint(tmp_path))
    for average, variable in zip(averages, averaged_variables(fresh), strict=True):
        np.testing.assert_array_equal(average, variable.numpy())


def test_frozen_backbone_trains_only_the_head_then_everything(tmp_path, shared_data):
    session = _session(tmp_path, shared_data, "train.freeze_backbone_epochs=1")
    model = session.state.model
    head = [v for layer in model.layers if layer.name.startswith("head_") for v in layer.weights]
    backbone = [v for v in averaged_variables(model) if all(v is not h for h in head)]
    backbone_before, head_before = _values(backbone), _values(head)
    session.train_function(0)(session.iterator, 2)
    for before, variable in zip(backbone_before, backbone, strict=True):
        np.testing.assert_array_equal(before, variable.numpy(), variable.path)  # BN stats too
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(head_before, head, strict=True))
    session.train_function(1)(session.iterator, 2)
    assert not np.array_equal(backbone_before[0], backbone[0].numpy())


# ----------------------------------------------------------------------------- a run


def _scalars(run_dir) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def test_every_option_together_trains_and_tensorboard_continues_across_resume(
    tmp_path, shared_data
):
    overrides = [
        "model.head=referable",
        "loss.label_smoothing=0.1",
        "loss.class_weights=balanced",
        "train.sampler=balanced",
        "schedule=warmup_cosine",
        "optimizer=sgd",
        "optimizer.clip_global_norm=1.0",
        "train.ema_decay=0.9",
        "train.freeze_backbone_epochs=1",
        "augment=strong",
        "train.steps_per_execution=2",
        "train.log_every_steps=2",
        NO_EVAL,
    ]
    first = train(smoke_config(shared_data, [*overrides, "train.epochs=1"]), tmp_path)
    second = train(smoke_config(shared_data, [*overrides, "train.epochs=2"]), tmp_path)
    assert math.isfinite(first["referable_auc"]) and math.isfinite(second["referable_auc"])
    scalars = _scalars(tmp_path)
    assert scalars["val/referable_auc"] == [5, 10]
    # Compiled calls of 2 steps in epochs of 5 steps end at 2, 4, 5, 7, 9, 10; the training
    # scalars are written at the exact multiples of 2 among them.
    assert scalars["train/loss"] == [2, 4, 6, 8, 10]
    assert {"learning_rate/all", "train/images_per_s", "epoch/skipped_steps"} <= set(scalars)


def test_resume_and_evaluation_do_not_need_the_initial_weights_file(tmp_path, shared_data):
    from retina.evaluation.held_out import evaluate_run

    initial = tmp_path / "initial.weights.h5"
    cfg = smoke_config(shared_data, [f"model.weights={initial}", "train.epochs=1", NO_EVAL])
    build_model(without_pretrained(cfg.model), cfg.preprocess.image_size).save_weights(initial)
    train(cfg, tmp_path / "run")
    initial.unlink()  # the checkpoint replaces every weight from here on
    train(replace(cfg, train=replace(cfg.train, epochs=2)), tmp_path / "run")
    assert evaluate_run(tmp_path / "run", split="val", n_resamples=50)["eye_level"]["n"] > 0


def test_overfit_batch_preset_drives_the_loss_towards_zero(tmp_path, shared_data):
    cfg = to_typed(
        compose_config(
            "train",
            [
                "debug=overfit_batch",
                f"data.root={shared_data / 'synthetic'}",
                f"data.cache_dir={shared_data / 'cache'}",
            ],
        )
    )
    assert (cfg.train.limit_train_scans, cfg.augment.flip, cfg.model.widths) == (4, False, [8, 16])
    train(cfg, tmp_path)
    losses = pd.read_csv(tmp_path / "steps.csv")["loss"].to_numpy()
    assert len(losses) == 40 and losses[-5:].mean() < 0.2 * losses[:5].mean(), losses


@pytest.mark.parametrize(
    "optimizer, schedule", [("adam", "constant"), ("adamw", "step"), ("sgd", "warmup_cosine")]
)
def test_each_optimizer_and_schedule_trains_from_the_command_line_config(
    tmp_path, shared_data, optimizer, schedule
):
    session = _session(tmp_path, shared_data, f"optimizer={optimizer}", f"schedule={schedule}")
    inner = session.state.optimizers["all"]
    assert type(inner).__name__.lower() == optimizer
    before = _values(session.state.model.trainable_variables)
    losses, _, _ = session.train_function(0)(session.iterator, 2)
    assert np.isfinite(losses.numpy()).all()
    after = session.state.model.trainable_variables
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, after, strict=True))
    expected = {"constant": 1.0, "step": 1.0, "warmup_cosine": 3 / 5}[schedule]  # step 2 of 5
    base = {"adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2}[optimizer]
    assert float(inner.learning_rate) == pytest.approx(base * expected, rel=1e-5)
