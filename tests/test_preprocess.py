import numpy as np
import pytest
from skimage.draw import disk

from retina.config import PreprocessConfig
from retina.errors import DataError
from retina.preprocess import crop_to_circle, fit_circle, fov_mask, preprocess_fundus


def _fundus_like(height, width, centre, radius):
    image = np.zeros((height, width, 3), np.uint8)
    rows, cols = disk(centre, radius, shape=(height, width))
    image[rows, cols] = (180, 80, 40)
    return image


@pytest.mark.parametrize(
    "height, width, centre, radius",
    [
        (200, 240, (100, 120), 90),  # whole circle
        (200, 240, (100, 118), 110),  # clipped at top and bottom, as cameras do
        (300, 300, (140, 160), 120),
    ],
)
def test_fit_circle_finds_the_field_of_view(height, width, centre, radius):
    row, col, fitted = fit_circle(fov_mask(_fundus_like(height, width, centre, radius)))
    assert abs(fitted - radius) <= 0.03 * radius
    assert abs(row - centre[0]) <= 0.03 * radius and abs(col - centre[1]) <= 0.03 * radius


def test_crop_centres_the_circle_and_pads_black():
    image = _fundus_like(200, 240, (100, 118), 110)
    cropped = crop_to_circle(image, fit_circle(fov_mask(image)))
    assert abs(cropped.shape[0] - 220) <= 2 and cropped.shape[0] == cropped.shape[1]
    assert cropped[0, 0].sum() == 0 and cropped[cropped.shape[0] // 2, 5].sum() > 0


def test_preprocess_gives_fixed_size_uint8():
    out = preprocess_fundus(_fundus_like(150, 180, (75, 90), 70), PreprocessConfig(image_size=64))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_black_image_is_refused():
    with pytest.raises(DataError, match="no field of view"):
        preprocess_fundus(np.zeros((50, 60, 3), np.uint8), PreprocessConfig())
