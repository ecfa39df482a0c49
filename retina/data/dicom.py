"""DICOM -> RGB uint8 array plus PHI-free metadata.

Only pixel data and a few technical attributes leave this module. Names, patient IDs,
dates and institutions are never returned, logged or put into an error message.
"""

from __future__ import annotations

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


# Refused before decoding: an image DICOM announcing more decoded bytes than this, or a
# deflated file that inflates past it (a "deflate bomb").
MAX_DECODED_BYTES = 512 * 2**20
DEFLATED = "1.2.840.10008.1.2.1.99"


def _refuse_oversized(path, dataset=None) -> None:
    """Raises DicomError when the file would decode to more than MAX_DECODED_BYTES.

    Without ``dataset``, checks a deflated transfer syntax by inflating in bounded chunks
    (pydicom would inflate the whole file in memory while reading it).
    """
    if dataset is None:
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
                    f"{path}: deflated payload inflates past "
                    f"{MAX_DECODED_BYTES >> 20} MiB; refused."
                )
        return
    size = (
        int(dataset.get("Rows", 0))
        * int(dataset.get("Columns", 0))
        * int(dataset.get("SamplesPerPixel", 1))
        * int(dataset.get("NumberOfFrames", 1) or 1)
        * max(int(dataset.get("BitsAllocated", 8)), 8)
        // 8
    )
    if size > MAX_DECODED_BYTES:
        raise DicomError(
            f"{path}: announces {size >> 20} MiB of pixels (over "
            f"{MAX_DECODED_BYTES >> 20} MiB); refused before decoding."
        )


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
        _refuse_oversized(path)
        dataset = pydicom.dcmread(path)
        if "PixelData" not in dataset:
            raise DicomError(f"{path}: the DICOM holds no pixel data (not an image object).")
        _refuse_oversized(path, dataset)
        pixels = dataset.pixel_array
    except DicomError:
        raise
    except Exception as error:  # pydicom raises many types; the caller needs one
        raise DicomError(
            f"{path}: cannot decode the DICOM image ({type(error).__name__})."
        ) from None
    photometric = str(dataset.get("PhotometricInterpretation", ""))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        pixels = np.asarray(pixels)
        if frames > 1:  # multi-frame: the first frame is the photograph (documented rule)
            pixels = pixels[0]
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, dataset)
        image = _to_rgb(pixels, photometric, int(dataset.get("BitsStored", 8)), path)
    except DicomError:
        raise
    except Exception as error:
        raise DicomError(
            f"{path}: cannot convert the DICOM pixels ({type(error).__name__})."
        ) from None
    return image, _phi_free_info(dataset, image, salt)


def _to_rgb(pixels: np.ndarray, photometric: str, bits_stored: int, path) -> np.ndarray:
    """(H, W, 3) uint8 from decoded pixels. pydicom already turns YBR_FULL/YBR_FULL_422
    into RGB and joins planar colour planes; this scales the bit depth and inverts
    MONOCHROME1 (where 0 is white)."""
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise DicomError(f"{path}: pixel array of shape {pixels.shape} is not an image.")
    image = _to_uint8(pixels, bits_stored)
    return 255 - image if photometric == "MONOCHROME1" else image


def _to_uint8(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype.kind == "u":  # scale the stored range (a palette LUT: its 16 bits)
        bits = 16 if pixels.max() > 2**bits_stored - 1 else bits_stored
        return np.round(pixels.astype(np.float64) * 255 / (2**bits - 1)).astype(np.uint8)
    pixels = pixels.astype(np.float64)  # signed or float: stretch what is there
    span = pixels.max() - pixels.min()
    return np.round((pixels - pixels.min()) / (span if span else 1) * 255).astype(np.uint8)


def _phi_free_info(dataset, image: np.ndarray, salt: str) -> DicomImageInfo:
    uid = str(dataset.get("SOPInstanceUID", ""))
    return DicomImageInfo(
        modality=str(dataset.get("Modality", "")),
        laterality=str(dataset.get("ImageLaterality", dataset.get("Laterality", ""))),
        rows=int(image.shape[0]),
        columns=int(image.shape[1]),
        pseudonym=text_sha256(f"{salt}:{uid}")[:16],
    )
