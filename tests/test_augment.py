"""Augmentation ops on a small synthetic fundus: seeded, identical eagerly and in tf.data,
and each one changes the image the way it claims to."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from retina.config import AugmentConfig
from retina.data.augment import (
    augment_image,
    random_colour,
    random_flips,
    random_resized_crop,
    random_rotation,
)
from retina.data.rand_augment import rand_augment, random_erasing
from retina.errors import ConfigError

SIZE = 32
CENTRE = (SIZE - 1) / 2
DISC_RADIUS = 10
DISC_COLOUR = (170, 110, 80)  # +-20 texture, +-51 brightness: no clipping
MARKER = slice(5, 8)  # rows and columns of a grey square outside the disc
MARKER_LEVEL = 230
NUM_SEEDS = 8


def _fundus(background: int = 0) -> np.ndarray:
    """A reddish disc with a gentle texture on a black surround, plus a corner marker."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    radius = np.hypot(rows - CENTRE, cols - CENTRE)
    image = np.full((SIZE, SIZE, 3), background, np.uint8)
    disc = radius <= DISC_RADIUS
    texture = (rows - CENTRE) + (cols - CENTRE)  # -20..20 across the disc
    for channel, level in enumerate(DISC_COLOUR):
        image[..., channel][disc] = (level + texture[disc]).astype(np.uint8)
    image[MARKER, MARKER] = MARKER_LEVEL
    return image


IMAGE = _fundus()
DISC = np.hypot(*(np.mgrid[:SIZE, :SIZE] - CENTRE)) <= DISC_RADIUS
BACKGROUND = IMAGE.max(axis=-1) == 0
SEEDS = tf.constant([[7, index] for index in range(NUM_SEEDS)], tf.int64)

ALL_ON = AugmentConfig(
    flip=True,
    rotation_degrees=30.0,
    crop_scale_min=0.7,
    brightness=0.1,
    contrast=0.2,
    saturation=0.2,
    hue=0.05,
)
ALL_OFF = AugmentConfig(flip=False)

OPS = {
    "flips": lambda image, seed: random_flips(image, seed),
    "rotation": lambda image, seed: random_rotation(image, seed, max_degrees=30.0),
    "crop": lambda image, seed: random_resized_crop(image, seed, min_scale=0.6),
    "colour": lambda image, seed: random_colour(image, seed, 0.1, 0.2, 0.3, 0.1),
    "augment_image": lambda image, seed: augment_image(image, seed, ALL_ON),
    "rand_augment": lambda image, seed: rand_augment(image, seed, 2, 9.0, 0.5),
    "erasing": lambda image, seed: random_erasing(image, seed, 1.0),
}


def _eager(op, image: np.ndarray = IMAGE) -> list[np.ndarray]:
    return [op(tf.constant(image), seed).numpy() for seed in SEEDS]


def _in_tf_data(op, image: np.ndarray = IMAGE) -> list[np.ndarray]:
    image = tf.constant(image)
    dataset = tf.data.Dataset.from_tensor_slices(SEEDS).map(
        lambda seed: op(image, seed), num_parallel_calls=4, deterministic=True
    )
    assert dataset.element_spec.shape == (SIZE, SIZE, 3), "static shape survives"
    return list(dataset.as_numpy_iterator())


@pytest.mark.parametrize("name", list(OPS))
def test_op_is_seeded_and_the_same_eagerly_and_in_tf_data(name):
    eager = _eager(OPS[name])
    for a, b in zip(eager, _in_tf_data(OPS[name]), strict=True):
        assert a.dtype == np.uint8 and a.shape == IMAGE.shape
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(eager, _eager(OPS[name]), err_msg="same seed, same output")
    distinct = {a.tobytes() for a in eager}
    # Flips have only four outcomes, and RandAugment leaves a quarter of the scans as they
    # were (each of its two ops is skipped with probability 1/2); every other op draws a
    # continuous parameter.
    least = {"flips": 3, "rand_augment": NUM_SEEDS // 2}.get(name, NUM_SEEDS)
    assert len(distinct) >= least, f"{name}: seeds differ"
    assert any(not np.array_equal(a, IMAGE) for a in eager)


@pytest.mark.parametrize(
    "name", ["rotation", "crop", "colour", "augment_image", "rand_augment", "erasing"]
)
def test_op_accepts_an_image_of_unknown_static_size(name):
    """The pipeline's decode_png gives (None, None, 3); the ops must not need H and W."""
    # Fed as dataset elements, not a constant, so TF cannot infer the decoded shape.
    pngs = tf.fill([NUM_SEEDS], tf.io.encode_png(IMAGE))
    dataset = tf.data.Dataset.from_tensor_slices((SEEDS, pngs)).map(
        lambda seed, png: OPS[name](tf.io.decode_png(png, channels=3), seed)
    )
    assert dataset.element_spec.shape.as_list() == [None, None, 3]
    for a, b in zip(_eager(OPS[name]), dataset.as_numpy_iterator(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "op",
    [
        pytest.param(lambda image, seed: random_rotation(image, seed, 0.0), id="rotation_0"),
        pytest.param(lambda image, seed: random_resized_crop(image, seed, 1.0), id="crop_1"),
        pytest.param(lambda image, seed: random_colour(image, seed, 0, 0, 0, 0), id="colour_0"),
        pytest.param(lambda image, seed: augment_image(image, seed, ALL_OFF), id="all_off"),
    ],
)
def test_zero_strength_gives_the_exact_input(op):
    for output in _eager(op):
        np.testing.assert_array_equal(output, IMAGE)


def _marker_centre(image: np.ndarray) -> np.ndarray | None:
    """Centre of the grey marker: bright in every channel, unlike the reddish disc."""
    spots = np.argwhere(image.min(axis=-1) > 150)
    return spots.mean(axis=0) if len(spots) else None


def test_rotation_turns_about_the_centre():
    original_marker = _marker_centre(IMAGE)
    marker_radius = np.hypot(*(original_marker - CENTRE))
    moved = 0
    for output in _eager(lambda image, seed: random_rotation(image, seed, 180.0)):
        centre = output[int(CENTRE) : int(CENTRE) + 2, int(CENTRE) : int(CENTRE) + 2]
        original = IMAGE[int(CENTRE) : int(CENTRE) + 2, int(CENTRE) : int(CENTRE) + 2]
        assert np.abs(centre.astype(int) - original).max() <= 3, "the disc stays centred"
        disc_pixels = np.count_nonzero((output[..., 0] > 100) & (output[..., 2] < 150))
        assert abs(disc_pixels - DISC.sum()) <= 0.1 * DISC.sum(), "rotation keeps the disc"
        marker = _marker_centre(output)
        assert marker is not None, "the marker stays inside the square (it is within r=H/2)"
        assert abs(np.hypot(*(marker - CENTRE)) - marker_radius) < 1.0, "it moves on its circle"
        moved += np.hypot(*(marker - original_marker)) > 2
    assert moved >= NUM_SEEDS - 1, "rotations up to 180 degrees move the marker"


def test_rotation_stays_within_its_maximum():
    """A 5-degree rotation moves the marker (radius ~13 px) by at most ~1.2 px."""
    original_marker = _marker_centre(IMAGE)
    for output in _eager(lambda image, seed: random_rotation(image, seed, 5.0)):
        limit = 2 * 13.5 * math.sin(math.radians(5.0) / 2) + 0.3
        assert np.hypot(*(_marker_centre(output) - original_marker)) <= limit


def test_crop_enlarges_the_disc_by_at_most_one_over_min_scale_squared():
    original = DISC.sum()
    counts = [
        np.count_nonzero((output[..., 0] > 100) & (output[..., 2] < 150))
        for output in _eager(lambda image, seed: random_resized_crop(image, seed, 0.5))
    ]
    # A crop in a corner holds a quarter of the disc, enlarged four times: about as many
    # disc pixels as before; any crop nearer the centre shows more.
    assert min(counts) >= 0.85 * original
    assert np.mean(counts) > 1.3 * original
    assert max(counts) <= 4.2 * original


def test_brightness_shifts_the_disc_and_leaves_the_surround_black():
    changes = []
    for output in _eager(lambda image, seed: random_colour(image, seed, 0.2, 0, 0, 0)):
        change = output[DISC].astype(int) - IMAGE[DISC]
        assert change.max() - change.min() <= 1, "one delta for every pixel and channel"
        assert abs(change.mean()) <= 0.2 * 255 + 1
        assert (output[BACKGROUND] == 0).all()
        changes.append(change.mean())
    assert min(changes) < -2 and max(changes) > 2, "seeds both brighten and darken"


@pytest.mark.parametrize(
    "strengths",
    [
        pytest.param((0.3, 0, 0, 0), id="brightness"),
        pytest.param((0, 0.5, 0, 0), id="contrast"),
        pytest.param((0, 0, 0.8, 0), id="saturation"),
        pytest.param((0, 0, 0, 0.3), id="hue"),
        pytest.param((0.3, 0.5, 0.8, 0.3), id="all"),
    ],
)
@pytest.mark.parametrize("background", [0, 5])
def test_colour_changes_the_disc_but_not_the_surround(strengths, background):
    image = _fundus(background)
    outputs = _eager(lambda image, seed: random_colour(image, seed, *strengths), image)
    for output in outputs:
        np.testing.assert_array_equal(output[BACKGROUND], image[BACKGROUND])
    assert any(np.abs(o[DISC].astype(int) - image[DISC]).max() > 3 for o in outputs)


def test_contrast_pivots_on_the_field_of_view_mean():
    field_of_view = ~BACKGROUND
    for output in _eager(lambda image, seed: random_colour(image, seed, 0, 0.1, 0, 0)):
        np.testing.assert_allclose(
            output[field_of_view].mean(axis=0), IMAGE[field_of_view].mean(axis=0), atol=1.0
        )


def test_augment_image_is_deterministic_for_a_seed():
    seed = tf.constant([3, 14], tf.int64)
    first = augment_image(tf.constant(IMAGE), seed, ALL_ON).numpy()
    np.testing.assert_array_equal(first, augment_image(tf.constant(IMAGE), seed, ALL_ON))
    other = augment_image(tf.constant(IMAGE), tf.constant([3, 15], tf.int64), ALL_ON)
    assert not np.array_equal(first, other.numpy())


def test_switching_colour_on_leaves_the_geometry_alone():
    """Each op has its own slice of the seed, so the colour op only recolours."""
    geometry = dataclasses.replace(ALL_ON, brightness=0, contrast=0, saturation=0, hue=0)
    for seed in SEEDS:
        moved = augment_image(tf.constant(IMAGE), seed, geometry)
        colour_seed = tf.random.experimental.stateless_split(seed, num=4)[3]
        expected = random_colour(moved, colour_seed, 0.1, 0.2, 0.2, 0.05)
        np.testing.assert_array_equal(augment_image(tf.constant(IMAGE), seed, ALL_ON), expected)


def _op_types(cfg: AugmentConfig) -> set[str]:
    traced = tf.function(lambda image, seed: augment_image(image, seed, cfg)).get_concrete_function(
        tf.TensorSpec([SIZE, SIZE, 3], tf.uint8), tf.TensorSpec([2], tf.int64)
    )
    return {op.type for op in traced.graph.get_operations()}


@pytest.mark.parametrize(
    ("key", "value", "op_type"),
    [
        ("rotation_degrees", 10.0, "ImageProjectiveTransformV3"),
        ("crop_scale_min", 0.8, "ResizeBilinear"),
        ("saturation", 0.2, "AdjustSaturation"),
        ("hue", 0.1, "AdjustHue"),
        ("rand_augment_layers", 2, "StatelessCase"),
        ("erase_probability", 0.25, "StatelessRandomNormalV2"),
    ],
)
def test_ops_that_are_off_are_not_in_the_graph(key, value, op_type):
    assert op_type not in _op_types(ALL_OFF)
    assert op_type in _op_types(dataclasses.replace(ALL_OFF, **{key: value}))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rotation_degrees", -1.0),
        ("rotation_degrees", 181.0),
        ("rotation_degrees", math.nan),
        ("crop_scale_min", 0.0),
        ("crop_scale_min", 1.5),
        ("brightness", -0.1),
        ("brightness", math.inf),
        ("contrast", -0.1),
        ("contrast", 1.5),
        ("saturation", -0.1),
        ("saturation", 1.2),
        ("hue", -0.1),
        ("hue", 0.6),
        ("hue", "0.1"),
        ("rand_augment_layers", 1.5),
        ("rand_augment_layers", -1),
        ("rand_augment_magnitude", 11.0),
        ("erase_probability", 1.5),
        ("mixup_alpha", -0.2),
        ("cutmix_alpha", math.nan),
    ],
)
def test_augment_image_rejects_an_out_of_range_value_naming_the_key(key, value):
    cfg = dataclasses.replace(AugmentConfig(), **{key: value})
    with pytest.raises(ConfigError, match=rf"augment\.{key}=.*use a value in"):
        augment_image(tf.constant(IMAGE), SEEDS[0], cfg)


def test_augment_image_accepts_the_ends_of_each_range():
    cfg = AugmentConfig(
        flip=True,
        rotation_degrees=180.0,
        crop_scale_min=1.0,
        brightness=1.0,
        contrast=1.0,
        saturation=1.0,
        hue=0.5,
    )
    output = augment_image(tf.constant(IMAGE), SEEDS[0], cfg)
    assert output.dtype == tf.uint8 and output.shape == IMAGE.shape


def test_rotation_rounds_to_uint8_rather_than_truncating():
    """A linear ramp rotated about the centre keeps its mean over a centred disc (the set of
    pixel centres in it is point-symmetric); truncating to uint8 would lower it by ~0.5."""
    ramp = np.broadcast_to(60 + 4 * np.arange(SIZE, dtype=np.uint8), (SIZE, SIZE))
    ramp = np.repeat(ramp[..., None], 3, axis=-1)
    inner = np.hypot(*(np.mgrid[:SIZE, :SIZE] - CENTRE)) <= 12
    for output in _eager(lambda image, seed: random_rotation(image, seed, 180.0), ramp):
        assert abs(output[inner].mean() - (60 + 4 * CENTRE)) < 0.15
