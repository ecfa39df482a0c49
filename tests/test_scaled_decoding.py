"""Scaled decoding: the cache ingests a large scan no finer than it needs
(``retina.data.images.read_scaled``) and gets what a full decode gives."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from retina.config import PreprocessConfig
from retina.config.schema import SyntheticConfig
from retina.data.cache_entry import preprocessed
from retina.data.fundus import gradability_measures
from retina.data.images import read_scaled
from retina.data.synthetic import ensure_synthetic_dataset

SALT = "test-salt"


@pytest.fixture(scope="module")
def large_scans(tmp_path_factory):
    """The built-in set rendered at 1024 rows (4x its default): its JPEG, PNG and DICOM
    scans at three cameras' resolutions (819, 922 and 1024 rows)."""
    root = tmp_path_factory.mktemp("large")
    spec = SyntheticConfig(n_patients=10, image_height=1024, lesion_masks=False)
    ensure_synthetic_dataset(root, spec)
    return sorted((root / "train_images").iterdir())


@pytest.fixture(scope="module")
def eyepacs_size_jpeg(tmp_path_factory):
    """scikit-image's fundus photograph on a 3888 x 2592 canvas (an EyePACS camera's)."""
    photo = Image.fromarray(data.retina()).resize((2592, 2592))
    canvas = Image.new("RGB", (3888, 2592))
    canvas.paste(photo, (648, 0))
    path = tmp_path_factory.mktemp("eyepacs") / "scan.jpg"
    canvas.save(path, quality=92)
    return path


@pytest.mark.parametrize("min_side, rows, factor", [(512, 648, 4), (700, 1296, 2), (300, 324, 8)])
def test_a_jpeg_is_decoded_at_the_coarsest_dct_scale_that_covers_min_side(
    eyepacs_size_jpeg, min_side, rows, factor
):
    image, reduced_by = read_scaled(eyepacs_size_jpeg, SALT, min_side)
    assert image.shape == (rows, rows * 3 // 2, 3) and reduced_by == factor


def test_other_formats_are_box_reduced_by_a_whole_factor(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (1000, 1200, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scan.png")
    image, reduced_by = read_scaled(tmp_path / "scan.png", SALT, 300)
    means = pixels[:999].reshape(333, 3, 400, 3, 3).mean(axis=(1, 3))  # of 3 x 3 pixels
    assert image.shape == (334, 400, 3) and reduced_by == pytest.approx(1000 / 334)
    assert np.abs(image[:333] - means).max() <= 1


def _cache_pair(path, size):
    cfg = PreprocessConfig(image_size=size)
    return preprocessed(path, cfg, SALT), preprocessed(path, cfg, SALT, scaled=False)


def test_the_scaled_cache_matches_the_full_decode_within_2_grey_levels(large_scans):
    """Measured: at most 0.6 grey levels per pixel (mean 0.14) at 512 px."""
    reduced = 0
    for path in large_scans:
        (scaled, _), (full, _) = _cache_pair(path, 512)
        difference = np.abs(scaled.astype(int) - full).mean()
        assert difference <= 2, f"{path.name}: {difference:.2f} grey levels"
        reduced += read_scaled(path, SALT, 512)[1] > 1
    assert reduced >= len(large_scans) // 3  # the 1024-row camera's scans, at least


def test_gradability_is_decided_the_same_from_a_scaled_decode(large_scans):
    """The flags, and the measures behind them (measured: sharpness within 9.3%)."""
    for path in large_scans:
        (_, scaled_flags), (_, full_flags) = _cache_pair(path, 128)
        assert scaled_flags == full_flags, path.name
        scaled, reduced_by = read_scaled(path, SALT, 256)
        field, brightness, sharpness = gradability_measures(read_scaled(path, SALT, 0)[0])
        assert reduced_by > 1.9, path.name  # every camera's scans are reduced at 256 rows
        scaled_field, scaled_brightness, scaled_sharpness = gradability_measures(scaled)
        assert scaled_field == pytest.approx(field, rel=0.01), path.name
        assert scaled_brightness == pytest.approx(brightness, rel=0.01), path.name
        assert scaled_sharpness == pytest.approx(sharpness, rel=0.15), path.name
