"""Every stored image format becomes the 8-bit RGB a reader would see: table-driven, the
expected pixels computed here from what was written."""

import io

import cv2
import numpy as np
import png
import pytest
import tifffile
from PIL import Image

from retina.data.images import read_image_rgb

SALT = "test-salt"

RAMP_12 = np.arange(4096, dtype=np.uint16).reshape(64, 64)
RAMP_16 = (np.arange(4096, dtype=np.uint32) * 65535 // 4095).astype(np.uint16).reshape(64, 64)
DARK_12 = (np.arange(4096, dtype=np.uint32) * 1000 // 4095).astype(np.uint16).reshape(64, 64)


def _grey(values: np.ndarray, full_scale: int) -> np.ndarray:
    scaled = np.round(values.astype(np.float64) * 255 / full_scale).astype(np.uint8)
    return np.repeat(scaled[..., None], 3, axis=2)


def _png16(path, values):
    cv2.imwrite(str(path), values)


def _png_with_sbit(path, values):
    """pypng at bitdepth 12 writes 16-bit samples scaled to the full range plus sBIT=12, as
    the PNG standard describes."""
    writer = png.Writer(values.shape[1], values.shape[0], greyscale=True, bitdepth=12)
    with open(path, "wb") as handle:
        writer.write(handle, values.tolist())


def _tiff16(path, values, **tags):
    tifffile.imwrite(path, values, **tags)


GREY_CASES = [
    ("png_12bit_ramp", "png", _png16, RAMP_12, 4095),
    ("png_16bit_ramp", "png", _png16, RAMP_16, 65535),
    ("png_12bit_dark", "png", _png16, DARK_12, 4095),
    ("png_sbit_12_ramp", "png", _png_with_sbit, RAMP_12, 4095),
    ("png_sbit_12_dark", "png", _png_with_sbit, DARK_12, 4095),
    ("tiff_12bit_ramp", "tif", _tiff16, RAMP_12, 4095),
    ("tiff_16bit_ramp", "tif", _tiff16, RAMP_16, 65535),
    ("tiff_12bit_dark", "tif", _tiff16, DARK_12, 4095),
]


@pytest.mark.parametrize(
    "name, suffix, write, values, full_scale", GREY_CASES, ids=[c[0] for c in GREY_CASES]
)
def test_16_bit_greyscale_is_scaled_by_its_bit_depth(
    tmp_path, name, suffix, write, values, full_scale
):
    path = tmp_path / f"{name}.{suffix}"
    write(path, values)
    image = read_image_rgb(path, SALT)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    np.testing.assert_array_equal(image, _grey(values, full_scale))
    if "dark" in name:  # under-exposed stays dark: the gradability check must see it
        assert image.max() == round(1000 * 255 / 4095) == 62
    else:
        assert (image.min(), image.max()) == (0, 255)


def test_tiff_max_sample_value_is_the_declared_depth(tmp_path):
    """A 10-bit camera's TIFF that says so (MaxSampleValue 1023)."""
    values = (np.arange(4096) % 1024).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "ten_bit.tif"
    tifffile.imwrite(path, values, extratags=[(281, "H", 1, 1023)])
    np.testing.assert_array_equal(read_image_rgb(path, SALT), _grey(values, 1023))


def test_16_bit_rgb_png(tmp_path):
    rgb = np.stack([RAMP_16, RAMP_16[::-1], np.full_like(RAMP_16, 32768)], axis=2)
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    expected = np.round(rgb.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(read_image_rgb(path, SALT), expected)


def _pillow_file(tmp_path, image: Image.Image, name: str, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


def test_palette_png_becomes_its_colours(tmp_path):
    indices = (np.arange(64 * 64) % 4).astype(np.uint8).reshape(64, 64)
    colours = np.array([[0, 0, 0], [200, 30, 10], [250, 220, 120], [90, 10, 5]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(colours.ravel().tolist())
    path = _pillow_file(tmp_path, image, "palette.png")
    np.testing.assert_array_equal(read_image_rgb(path, SALT), colours[indices])


def test_rgba_png_is_composited_onto_black(tmp_path):
    rgb = np.full((64, 64, 3), (200, 100, 50), np.uint8)
    alpha = np.zeros((64, 64, 1), np.uint8)
    alpha[:, 32:] = 255
    alpha[:, 16:32] = 128
    path = _pillow_file(tmp_path, Image.fromarray(np.concatenate([rgb, alpha], 2)), "a.png")
    image = read_image_rgb(path, SALT).astype(int)
    expected = np.round(rgb * (alpha / 255.0)).astype(int)
    np.testing.assert_array_equal(image[:, :16], 0)  # transparent: black
    np.testing.assert_array_equal(image[:, 32:], rgb[:, 32:])  # opaque: unchanged
    assert np.abs(image - expected).max() <= 1  # half: half the colour (integer rounding)


def test_greyscale_jpeg_becomes_three_equal_channels(tmp_path):
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    path = _pillow_file(tmp_path, Image.fromarray(grey, "L"), "grey.jpg", quality=95)
    image = read_image_rgb(path, SALT)
    assert image.shape == (64, 64, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    assert np.abs(image[..., 0].astype(int) - grey).mean() < 2


def test_cmyk_jpeg_becomes_the_rgb_it_was_made_from(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:32], rgb[32:, :32], rgb[32:, 32:] = (200, 80, 40), (30, 160, 90), (250, 240, 230)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    path = _pillow_file(tmp_path, cmyk, "cmyk.jpg", quality=98)
    assert Image.open(path).mode == "CMYK"
    assert np.abs(read_image_rgb(path, SALT).astype(int) - rgb).mean() < 3


def test_exif_orientation_6_is_applied(tmp_path):
    """Orientation 6: the stored pixels must be turned 90 degrees clockwise for display."""
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:8, :8] = 255  # a white mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _pillow_file(tmp_path, Image.fromarray(stored), "phone.jpg", exif=exif, quality=95)
    image = read_image_rgb(path, SALT)
    assert image.shape == (64, 40, 3)
    expected = np.rot90(stored, k=-1)  # clockwise: the mark goes to the top-right
    assert np.abs(image.astype(int) - expected).mean() < 3
    assert image[:8, -8:].mean() > 200 and image[:8, :8].mean() < 50


def test_pillow_alone_would_have_whitened_a_12_bit_tiff(tmp_path):
    """Why this module exists: the old path, Image.convert("RGB"), saturates it."""
    path = tmp_path / "old.tif"
    tifffile.imwrite(path, RAMP_12)
    old = np.asarray(Image.open(path).convert("RGB"))
    assert (old == 255).mean() > 0.9
    assert (read_image_rgb(path, SALT) == 255).mean() < 0.01


def test_undecodable_bytes_are_a_data_error_naming_the_file(tmp_path):
    from retina.errors import DataError

    path = tmp_path / "broken.png"
    path.write_bytes(io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10).getvalue())
    with pytest.raises(DataError, match="broken.png"):
        read_image_rgb(path, SALT)
