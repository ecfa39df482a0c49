"""DICOM -> RGB uint8 array plus PHI-free metadata.

Only pixel data and a few technical attributes leave this module. Names, patient IDs,
dates and institutions are never returned, logged or put into an error message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retina.errors import DicomError


@dataclass(frozen=True)
class DicomImageInfo:
    """What a DICOM may tell the rest of the program: nothing that identifies a person."""

    modality: str
    laterality: str
    rows: int
    columns: int
    pseudonym: str


def read_dicom_rgb(path: str | Path, salt: str = "retina") -> tuple[np.ndarray, DicomImageInfo]:
    """Decodes an image DICOM into an (H, W, 3) uint8 RGB array.

    Args:
        path: the DICOM file.
        salt: mixed into the pseudonymous scan id derived from the SOP Instance UID.

    Raises:
        DicomError: naming the file, when it holds no decodable image.
    """
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
        if "PixelData" not in dataset:
            raise DicomError(f"{path}: the DICOM holds no pixel data (not an image object).")
        pixels = dataset.pixel_array
    except DicomError:
        raise
    except Exception as error:  # pydicom raises many types; the caller needs one
        raise DicomError(
            f"{path}: cannot decode the DICOM image ({type(error).__name__})."
        ) from None
    image = _to_rgb(np.asarray(pixels), dataset.get("PhotometricInterpretation", ""), path)
    return image, _phi_free_info(dataset, image, salt)


def _to_rgb(pixels: np.ndarray, photometric: str, path) -> np.ndarray:
    if pixels.ndim == 4:  # multi-frame: the first frame is the photograph
        pixels = pixels[0]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise DicomError(f"{path}: pixel array of shape {pixels.shape} is not an image.")
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float64)
        span = pixels.max() - pixels.min()
        pixels = (pixels - pixels.min()) / (span if span else 1) * 255
    image = pixels.astype(np.uint8)
    return 255 - image if photometric == "MONOCHROME1" else image


def _phi_free_info(dataset, image: np.ndarray, salt: str) -> DicomImageInfo:
    uid = str(dataset.get("SOPInstanceUID", ""))
    return DicomImageInfo(
        modality=str(dataset.get("Modality", "")),
        laterality=str(dataset.get("ImageLaterality", dataset.get("Laterality", ""))),
        rows=int(image.shape[0]),
        columns=int(image.shape[1]),
        pseudonym=hashlib.sha256(f"{salt}:{uid}".encode()).hexdigest()[:16],
    )
