import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from retina.data.dicom import read_dicom_rgb
from retina.data.synthetic import write_ophthalmic_dicom
from retina.errors import DicomError


def test_round_trip_keeps_pixels_and_drops_identifiers(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    path = tmp_path / "scan.dcm"
    write_ophthalmic_dicom(path, image, "L", "MRN-31337", "Doe^Jane", uid_seed="x")
    pixels, info = read_dicom_rgb(path)
    np.testing.assert_array_equal(pixels, image)
    assert (info.modality, info.laterality, info.rows, info.columns) == ("OP", "L", 20, 24)
    assert "31337" not in repr(info) and "Doe" not in repr(info)


def _grayscale(tmp_path, photometric, bits):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = 4, 5
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    values = np.arange(20, dtype=np.uint16 if bits == 16 else np.uint8).reshape(4, 5) * 3
    ds.PixelData = values.tobytes()
    path = tmp_path / f"{photometric}-{bits}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    "photometric, bits", [("MONOCHROME2", 8), ("MONOCHROME2", 16), ("MONOCHROME1", 16)]
)
def test_grayscale_becomes_rgb_uint8(tmp_path, photometric, bits):
    pixels, _ = read_dicom_rgb(_grayscale(tmp_path, photometric, bits))
    assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8
    darkest = pixels[0, 0, 0]
    assert darkest == (255 if photometric == "MONOCHROME1" else 0)


def test_dicom_without_pixels_is_refused_by_name(tmp_path):
    path = _grayscale(tmp_path, "MONOCHROME2", 8)
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(DicomError, match="no pixel data") as error:
        read_dicom_rgb(path)
    assert str(path) in str(error.value)


def test_garbage_file_raises_dicom_error(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\x00not a dicom" * 50)
    with pytest.raises(DicomError, match="junk.dcm"):
        read_dicom_rgb(path)
