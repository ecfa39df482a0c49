"""DICOM -> RGB uint8 array plus PHI-free metadata.

Only pixel data and a few technical attributes leave this module. Names, patient IDs,
dates and institutions are never returned, logged or put into an error message.

Pixels follow the standard's display pipeline before the 8-bit conversion: the Modality
LUT (Rescale Slope/Intercept or a Modality LUT Sequence), then for MONOCHROME images the
VOI LUT (a VOI LUT Sequence, else Window Center/Width), then MONOCHROME1 is inverted.
Only the first frame of a multi-frame file is decoded, so memory is bounded by one frame.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retina.errors import DicomError
from retina.files import text_sha256


@dataclass(frozen=True)
class DicomImageInfo:
    """What a DICOM may tell the rest of the program: nothing that identifies a person."""

    modality: str
    laterality: str
    rows: int
    columns: int
    pseudonym: str


# Refused before decoding: an image DICOM announcing more decoded bytes per frame than
# this, or a deflated file that inflates past it (a "deflate bomb").
MAX_DECODED_BYTES = 512 * 2**20
DEFLATED = "1.2.840.10008.1.2.1.99"
# Element values above this size are read from the file only when used: the pixel data
# of a multi-frame file is never loaded whole.
DEFER_BYTES = 1024


def _refuse_deflate_bomb(path) -> None:
    """Raises DicomError when a deflated file inflates past MAX_DECODED_BYTES, inflating in
    bounded chunks (pydicom would inflate the whole file in memory while reading it)."""
    import zlib

    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != DEFLATED:
        return
    data = Path(path).read_bytes()
    # Preamble (128) + "DICM" (4) + the group-length element (12) + the meta group.
    start = 144 + int(meta.get("FileMetaInformationGroupLength", 0))
    inflater, produced = zlib.decompressobj(-zlib.MAX_WBITS), 0
    for offset in range(start, len(data), 1 << 16):
        produced += len(inflater.decompress(data[offset : offset + (1 << 16)], 1 << 24))
        while inflater.unconsumed_tail and produced <= MAX_DECODED_BYTES:
            produced += len(inflater.decompress(inflater.unconsumed_tail, 1 << 24))
        if produced > MAX_DECODED_BYTES:
            raise DicomError(
                f"{path}: deflated payload inflates past {MAX_DECODED_BYTES >> 20} MiB; refused."
            )


def _refuse_oversized_frame(path, dataset) -> None:
    from pydicom.pixels.utils import get_expected_length

    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    size = get_expected_length(dataset, unit="bytes") // frames
    if size > MAX_DECODED_BYTES:
        raise DicomError(
            f"{path}: announces {size >> 20} MiB of pixels per frame (over "
            f"{MAX_DECODED_BYTES >> 20} MiB); refused before decoding."
        )


def read_dicom_header(path: str | Path):
    """The dataset without loading the pixel data (large values are read on demand)."""
    import pydicom

    _refuse_deflate_bomb(path)
    dataset = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    if "PixelData" not in dataset:
        raise DicomError(f"{path}: the DICOM holds no pixel data (not an image object).")
    _refuse_oversized_frame(path, dataset)
    return dataset


def read_first_frame(path: str | Path) -> np.ndarray:
    """The first frame's stored pixel values, decoded alone (``pydicom.pixels.pixel_array``
    with ``index=0``): YBR converted to RGB, planar colour planes joined."""
    from pydicom.pixels import pixel_array

    return pixel_array(str(path), index=0)


def read_dicom_rgb(path: str | Path, salt: str) -> tuple[np.ndarray, DicomImageInfo]:
    """Decodes an image DICOM into an (H, W, 3) uint8 RGB array.

    Args:
        path: the DICOM file.
        salt: ``data.id_salt``, mixed into the pseudonym derived from the SOP Instance UID.

    Raises:
        DicomError: naming the file, when it holds no decodable image.
    """
    try:
        dataset = read_dicom_header(path)
        pixels = read_first_frame(path)
    except DicomError:
        raise
    except Exception as error:  # pydicom raises many types; the caller needs one
        raise DicomError(
            f"{path}: cannot decode the DICOM image ({type(error).__name__})."
        ) from None
    try:
        image = _displayed_rgb(pixels, dataset, path)
    except DicomError:
        raise
    except Exception as error:
        raise DicomError(
            f"{path}: cannot convert the DICOM pixels ({type(error).__name__})."
        ) from None
    return image, _phi_free_info(dataset, image, salt)


def _displayed_rgb(pixels: np.ndarray, dataset, path) -> np.ndarray:
    """(H, W, 3) uint8 as the image would be displayed."""
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        bits = int(dataset.RedPaletteColorLookupTableDescriptor[2])  # 8 or 16 per entry
        return _scaled(apply_color_lut(pixels, dataset), 0, 2**bits - 1)
    if photometric.startswith("MONOCHROME"):
        grey = _monochrome_to_uint8(pixels, dataset)
        pixels = np.repeat(grey[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise DicomError(f"{path}: pixel array of shape {pixels.shape} is not an image.")
    if pixels.dtype == np.uint8:
        return pixels
    return _scaled(pixels, 0, 2 ** int(dataset.get("BitsStored", 8)) - 1)


def _monochrome_to_uint8(pixels: np.ndarray, dataset) -> np.ndarray:
    """Modality LUT, then VOI LUT or window, mapped from the standard's output range of that
    step to 0..255; MONOCHROME1 (0 is white) inverted."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, dataset)
    low, high = _modality_output_range(dataset)
    if "VOILUTSequence" in dataset:
        values = _apply_voi_lut_sequence(values, dataset)
        low, high = 0, 2 ** int(dataset.VOILUTSequence[0].LUTDescriptor[2]) - 1
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        values = apply_voi_lut(values, dataset, index=0)  # windowing keeps the range
    grey = _scaled(values, low, high)
    return 255 - grey if dataset.get("PhotometricInterpretation") == "MONOCHROME1" else grey


def _apply_voi_lut_sequence(values: np.ndarray, dataset) -> np.ndarray:
    """The first VOI LUT of the dataset, through pydicom's ``apply_voi``, shielded from an
    overflow in pydicom 3.0: it indexes the LUT with an array of the entries' own dtype, so
    with 8-bit entries every input past 255 wraps round to the start of the LUT (found by
    tests/test_dicom.py). The input is clipped to the LUT's input range and the descriptor
    read as 16 bits per entry (uint16 holds any index and any 8-bit entry)."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_voi

    item = copy.deepcopy(dataset.VOILUTSequence[0])
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    item.LUTDescriptor = [entries, first, max(bits, 16)]
    shim = Dataset()
    shim.file_meta = dataset.file_meta  # the byte order of OW LUT data
    shim.VOILUTSequence = [item]
    inputs = np.clip(np.rint(values), first, first + (entries or 2**16) - 1).astype(np.int64)
    return apply_voi(inputs, shim)


def _modality_output_range(dataset) -> tuple[float, float]:
    """The range the Modality LUT step can output (DICOM PS3.3 C.11.1; the range pydicom's
    windowing maps onto): a Modality LUT's entries, else the stored range rescaled."""
    if "ModalityLUTSequence" in dataset:
        return 0, 2 ** int(dataset.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    bits = int(dataset.get("BitsStored", 8))
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    bounds = sorted((low * slope + intercept, high * slope + intercept))
    return bounds[0], bounds[1]


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low..high`` linearly onto 0..255 (values outside clipped)."""
    span = (high - low) or 1
    scaled = (np.asarray(values, np.float64) - low) * (255 / span)
    return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


def _phi_free_info(dataset, image: np.ndarray, salt: str) -> DicomImageInfo:
    uid = str(dataset.get("SOPInstanceUID", ""))
    return DicomImageInfo(
        modality=str(dataset.get("Modality", "")),
        laterality=str(dataset.get("ImageLaterality", dataset.get("Laterality", ""))),
        rows=int(image.shape[0]),
        columns=int(image.shape[1]),
        pseudonym=text_sha256(f"{salt}:{uid}")[:16],
    )
