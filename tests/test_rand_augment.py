"""RandAugment's ops against the Pillow functions timm calls, random erasing's rectangle,
and mixup / cutmix of a batch, including the training step that mixes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from retina.config import AugmentConfig
from retina.data import rand_augment as ops
from retina.data.augment import augment_image
from retina.data.mixing import beta, cutmix, mix_batch, mixup

RNG = np.random.default_rng(0)
# Smooth gradients and a bright block (for the geometric ops), noise in the top rows (for
# the level-wise ones).
ROWS, COLS = np.mgrid[:40, :48]
IMAGE = np.stack([60 + 3 * COLS, 40 + 4 * ROWS, 90 + 2 * (ROWS + COLS) // 3], -1).astype(np.uint8)
IMAGE[15:25, 20:28] = 230
IMAGE[:6] = RNG.integers(0, 256, (6, 48, 3))
PIL_IMAGE = Image.fromarray(IMAGE)
# Within half a pixel outside the outer pixel centres, Pillow samples the image and TF
# fills: with a black frame (the fill) the two conventions agree.
FRAMED = np.pad(IMAGE[3:-3, 3:-3], [(3, 3), (3, 3), (0, 0)])


def _enhancement(name: str, enhancer, factor: float, tolerance: int = 0) -> tuple:
    """A case of an ImageEnhance op timm calls with ``factor``."""
    op = getattr(ops, name)
    return (
        f"{name}_{factor}",
        lambda x: op(x, factor),
        lambda i: enhancer(i).enhance(factor),
        tolerance,
    )


# op name, the project's op on a float image, what timm calls in Pillow, largest difference
PILLOW_CASES = [
    ("auto_contrast", ops.auto_contrast, ImageOps.autocontrast, 0),
    ("equalize", ops.equalize, ImageOps.equalize, 0),
    ("invert", ops.invert, ImageOps.invert, 0),
    ("posterize_2", lambda x: ops.posterize(x, 2.0), lambda i: ImageOps.posterize(i, 2), 0),
    ("solarize_100", lambda x: ops.solarize(x, 100.0), lambda i: ImageOps.solarize(i, 100), 0),
    # Pillow converts to grey with integer weights; float weights round differently at .5.
    _enhancement("colour", ImageEnhance.Color, 1.7, 1),
    _enhancement("colour", ImageEnhance.Color, 0.3, 1),
    _enhancement("contrast", ImageEnhance.Contrast, 1.6),
    _enhancement("brightness", ImageEnhance.Brightness, 1.5),
    _enhancement("sharpness", ImageEnhance.Sharpness, 1.8),
    _enhancement("sharpness", ImageEnhance.Sharpness, 0.1),
    (
        "translate_x",
        lambda x: ops.translate_x(x, 0.25, 0),
        lambda i: i.transform(i.size, Image.AFFINE, (1, 0, 12, 0, 1, 0), Image.BILINEAR),
        0,
    ),
    (
        "translate_y",
        lambda x: ops.translate_y(x, -0.2, 0),
        lambda i: i.transform(i.size, Image.AFFINE, (1, 0, 0, 0, 1, -8), Image.BILINEAR),
        0,
    ),
    # Bilinear resampling of the same rotation; Pillow's fixed-point weights differ by < 1.
    (
        "rotate_20",
        lambda x: ops.rotate(tf.constant(FRAMED, tf.float32), 20.0, 0),
        lambda i: Image.fromarray(FRAMED).rotate(20, Image.BILINEAR),
        1,
    ),
]


@pytest.mark.parametrize(
    ("ours", "pillow", "tolerance"),
    [pytest.param(*case[1:], id=case[0]) for case in PILLOW_CASES],
)
def test_each_op_reproduces_the_pillow_function_timm_calls(ours, pillow, tolerance):
    result = np.round(ours(tf.constant(IMAGE, tf.float32)).numpy())
    expected = np.asarray(pillow(PIL_IMAGE), np.float64)
    assert np.abs(result - expected).max() <= tolerance
    assert not np.array_equal(expected, IMAGE)  # the case changes the image


def test_solarize_add_adds_to_the_dark_values_only():
    image = tf.constant([[[10.0, 127.0, 128.0]]])
    np.testing.assert_array_equal(ops.solarize_add(image, 110.0).numpy(), [[[120, 237, 128]]])


def test_rand_augment_skips_half_its_ops_and_varies_the_rest():
    """One layer: each op is picked 1/15 of the time and applied half of those."""
    image = tf.constant(IMAGE)
    outputs = [
        ops.rand_augment(image, tf.constant([5, index], tf.int64), 1, 9.0, 0.5).numpy()
        for index in range(240)
    ]
    unchanged = np.mean([np.array_equal(output, IMAGE) for output in outputs])
    assert 0.4 < unchanged < 0.62  # 1/2 skipped (and a few ops at this image do nothing)
    # Auto-contrast, equalize and invert have one outcome each, posterize five.
    assert len({output.tobytes() for output in outputs}) > 60


def test_geometric_ops_fill_with_the_surround():
    shifted = ops.translate_x(tf.constant(IMAGE, tf.float32), 0.25, 128).numpy()
    assert (shifted[:, -12:] == 128).all()


def test_erasing_fills_one_rectangle_of_timms_size_with_noise():
    image = tf.constant(np.full((64, 64, 3), 100, np.uint8))
    for index in range(20):
        erased = ops.random_erasing(image, tf.constant([1, index], tf.int64), 1.0).numpy()
        rows, cols = np.nonzero((erased != 100).any(axis=-1))
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert 0.02 * 64 * 64 * 0.8 <= height * width <= 64 * 64 / 3 * 1.2
        assert 0.3 / 1.3 <= height / width <= 1.3 / 0.3
        assert erased[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].std() > 30


def test_erasing_happens_with_its_probability():
    image = tf.constant(IMAGE)
    erased = [
        not np.array_equal(
            ops.random_erasing(image, tf.constant([2, index], tf.int64), 0.25).numpy(), IMAGE
        )
        for index in range(400)
    ]
    assert 0.19 < np.mean(erased) < 0.31  # binomial(400, 0.25): sd 0.022


def test_new_ops_leave_the_draws_of_the_others_alone():
    """RandAugment and erasing take folded-in seeds: the flips, rotation, crop and colour of
    a scan are what they were before the two were switched on."""
    before = AugmentConfig(rotation_degrees=20.0, crop_scale_min=0.8, brightness=0.1)
    after = dataclasses.replace(before, rand_augment_layers=2)
    seed = tf.constant([3, 7], tf.int64)
    old = augment_image(tf.constant(IMAGE), seed, before)
    ra_seed = tf.random.experimental.stateless_fold_in(seed, 4)
    expected = ops.rand_augment(old, ra_seed, 2, 9.0, 0.5)
    np.testing.assert_array_equal(augment_image(tf.constant(IMAGE), seed, after), expected)


# ----------------------------------------------------------------------------- mixing


def _batch(size: int = 6) -> tf.Tensor:
    """Image i filled with the value 10 i: where a pixel came from is its value."""
    return tf.constant(
        np.arange(size)[:, None, None, None] * 10 * np.ones((1, 32, 40, 3)), tf.uint8
    )


def test_mixup_blends_each_scan_with_its_partner_in_the_reversed_batch():
    mixed = mixup(_batch(), tf.constant(0.7)).numpy()
    own = np.arange(6) * 10.0
    np.testing.assert_array_equal(mixed[:, 0, 0, 0], np.round(0.7 * own + 0.3 * own[::-1]))


def test_cutmix_pastes_one_box_whose_area_is_the_partners_weight():
    for index in range(10):
        mixed, own = cutmix(_batch(), tf.constant(0.6), tf.constant([4, index]))
        mixed = mixed.numpy()
        from_partner = (mixed[0, ..., 0] == 50).mean()  # scan 0's partner is scan 5
        assert from_partner == pytest.approx(1 - float(own), abs=1e-6)
        assert 0 < from_partner <= 0.4 + 1e-6  # clipping at the border only shrinks the box
        rows, cols = np.nonzero(mixed[0, ..., 0] == 50)
        assert len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a full rectangle


def test_beta_draws_have_the_distributions_moments():
    draws = np.array([float(beta(tf.constant([9, i]), 0.8)) for i in range(2000)])
    assert abs(draws.mean() - 0.5) < 0.02
    assert abs(draws.var() - 1 / (4 * (2 * 0.8 + 1))) < 0.01


def test_with_both_alphas_a_batch_is_mixed_one_way_or_the_other():
    kinds = set()
    for index in range(30):
        mixed, own = mix_batch(_batch(), tf.constant([6, index]), 0.8, 1.0)
        values = set(np.unique(mixed.numpy()[0]))
        kinds.add("cutmix" if values <= {0, 50} else "mixup")
        assert 0 <= float(own) <= 1
    assert kinds == {"cutmix", "mixup"}
    first = mix_batch(_batch(), tf.constant([6, 0]), 0.8, 1.0)
    np.testing.assert_array_equal(first[0], mix_batch(_batch(), tf.constant([6, 0]), 0.8, 1.0)[0])
