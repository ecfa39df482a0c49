"""Any scan file as an (H, W, 3) uint8 RGB array, read the way it was stored.

- 8-bit files (JPEG, PNG, TIFF): Pillow, with the EXIF orientation applied (phone-adapter
  fundus photos are often stored rotated); greyscale, palette and CMYK become RGB; an
  alpha channel is composited onto black, the colour of the fundus background.
- Deeper files (16-bit greyscale or RGB PNG/TIFF): decoded at full depth by OpenCV and
  scaled to 8 bits by their *declared* bit depth (PNG ``sBIT``, TIFF ``MaxSampleValue``;
  see ``scale_bits``); with none declared, by 12 bits when the maximum is below 4096 (a
  12-bit camera in a 16-bit container) and by 16 bits otherwise. Never per-image min/max
  stretching, which would hide under-exposure from the gradability check; never a plain
  division by 257, which turns a 12-bit scan nearly black.
- DICOM: ``retina.data.dicom`` (Modality LUT, VOI LUT, first frame only).

``read_scaled`` decodes no finer than a caller needs: JPEG through the decoder's own DCT
scaling (1/2, 1/4 or 1/8: the entropy decoding is the same, but the inverse transform,
colour conversion and every later step see a quarter or less of the pixels), everything
else box-averaged by a whole factor right after decoding. Either way the shorter side ends
between ``min_side`` and twice that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from retina.data.dicom import read_dicom_rgb
from retina.errors import DataError

UNDECLARED_SMALL_BITS = 12  # bits assumed when nothing is declared and the maximum fits
TIFF_BITS_PER_SAMPLE, TIFF_MAX_SAMPLE_VALUE = 258, 281


def read_image_rgb(path: str | Path, salt: str) -> np.ndarray:
    """The scan at ``path`` as (H, W, 3) uint8 RGB at full resolution; ``salt``
    (``data.id_salt``) is for the pseudonyms the DICOM reader derives.

    Raises:
        DataError: naming the file, when it cannot be decoded.
    """
    return read_scaled(path, salt, min_side=0)[0]


def read_scaled(path: str | Path, salt: str, min_side: int) -> tuple[np.ndarray, float]:
    """The scan as (H, W, 3) uint8 RGB, reduced while its shorter side stays at least
    ``min_side`` pixels (0: full resolution), and the factor it was reduced by (1.0: not).

    Raises:
        DataError: naming the file, when it cannot be decoded.
    """
    path = Path(path)
    try:
        full_side, image = _decoded(path, salt, min_side)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path}: cannot decode the image ({type(error).__name__}).") from None
    image = box_reduced(image, min_side)
    return image, full_side / min(image.shape[:2])


def _decoded(path: Path, salt: str, min_side: int) -> tuple[int, np.ndarray]:
    """(the file's shorter side, its pixels: JPEG already DCT-scaled towards ``min_side``)."""
    if path.suffix.lower() == ".dcm":
        image = read_dicom_rgb(path, salt)[0]
        return min(image.shape[:2]), image
    with Image.open(path) as image:
        full_side = min(image.size)
        stored, declared = stored_bits(image, path)
        if stored <= 8:
            if min_side and (size := _draft_size(image.size, min_side)):
                image.draft(None, size)  # JPEG (and MPO) scale; other formats ignore it
            ImageOps.exif_transpose(image, in_place=True)  # no copy when upright
            return full_side, eight_bit_rgb(image)
    return full_side, deep_rgb(path, declared)


JPEG_SCALES = (8, 4, 2)  # the reductions a JPEG decoder offers


def _draft_size(size: tuple[int, int], min_side: int) -> tuple[int, int] | None:
    """The size to ask ``Image.draft`` for: the coarsest DCT scale whose shorter side (JPEG
    rounds up) is still ``min_side``; None when only the full scale is."""
    short = min(size)
    for scale in JPEG_SCALES:
        if -(-short // scale) >= min_side:
            return size[0] // scale, size[1] // scale
    return None


def box_reduced(image: np.ndarray, min_side: int) -> np.ndarray:
    """Box-averaged by the largest whole factor that keeps the shorter side at least
    ``min_side`` (Pillow's ``reduce``); unchanged when that factor is 1."""
    factor = min(image.shape[:2]) // min_side if min_side else 1
    return np.asarray(Image.fromarray(image).reduce(factor)) if factor >= 2 else image


def stored_bits(image: Image.Image, path: Path) -> tuple[int, int | None]:
    """(bits per sample in the file, significant bits it declares or None)."""
    if image.format == "PNG":
        import png  # pypng: reads the header chunks Pillow skips (sBIT)

        reader = png.Reader(filename=str(path))
        reader.preamble()
        return reader.bitdepth, max(reader.sbit) if reader.sbit else None
    if image.format == "TIFF":
        stored = max(image.tag_v2.get(TIFF_BITS_PER_SAMPLE, (8,)))
        maximum = image.tag_v2.get(TIFF_MAX_SAMPLE_VALUE)
        declared = int(max(maximum)).bit_length() if maximum else None
        return stored, declared if declared and declared < stored else None
    return (16, None) if image.mode.startswith(("I", "F")) else (8, None)


def eight_bit_rgb(image: Image.Image) -> np.ndarray:
    """Any 8-bit Pillow image as RGB; transparent parts black."""
    if "A" in image.getbands() or "transparency" in image.info:
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, image.convert("RGBA"))
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def scale_bits(maximum: float, declared: int | None, stored: int = 16) -> int:
    """The bit depth whose full range maps onto 0..255.

    A declared depth with every value inside it: the values were stored as they are (TIFF
    MaxSampleValue, most camera PNGs). A declared depth with values beyond it: a PNG writer
    shifted them to the container's range, as the PNG standard says an sBIT writer does.
    Nothing declared: 12 bits when the maximum fits, else 16.
    """
    if declared:
        return declared if maximum < 2**declared else stored
    return UNDECLARED_SMALL_BITS if maximum < 2**UNDECLARED_SMALL_BITS else stored


def deep_rgb(path: Path, declared_bits: int | None) -> np.ndarray:
    """A 16-bit PNG or TIFF at full depth, scaled to 8 bits (see the module docstring)."""
    import cv2

    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise DataError(f"{path}: cannot decode the image (a {path.suffix} OpenCV cannot read).")
    pixels = np.asarray(pixels, np.float64)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    else:
        if pixels.shape[2] == 4:  # transparent parts black, as for 8-bit images
            pixels = pixels[..., :3] * (pixels[..., 3:] / (2**16 - 1))
        pixels = pixels[..., ::-1]  # OpenCV's channel order is BGR
    scaled = pixels * (255 / (2 ** scale_bits(pixels.max(), declared_bits) - 1))
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)
