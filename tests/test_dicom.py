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


def _dataset(pixels, photometric, samples=3, planar=0):
    """A Secondary Capture dataset holding ``pixels`` (8-bit unless changed after)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples == 3:
        ds.PlanarConfiguration = planar
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    data = pixels.transpose(2, 0, 1) if planar else pixels
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    return ds


def _grayscale(tmp_path, photometric, bits):
    values = np.arange(20, dtype=np.uint16 if bits == 16 else np.uint8).reshape(4, 5) * 3
    ds = _dataset(values, photometric, samples=1)
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
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


# --- photometric interpretations, planar configuration, compression, bundled files ---


def _rgb_dataset(image, photometric="RGB", planar=0):
    return _dataset(image, photometric, planar=planar)


IMAGE = np.random.default_rng(3).integers(0, 256, (16, 20, 3), dtype=np.uint8)


def test_planar_configuration_one(tmp_path):
    path = tmp_path / "planar.dcm"
    _rgb_dataset(IMAGE, planar=1).save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom_rgb(path)[0], IMAGE)


def test_ybr_full_becomes_rgb(tmp_path):
    from pydicom.pixels import convert_color_space

    path = tmp_path / "ybr.dcm"
    _rgb_dataset(convert_color_space(IMAGE, "RGB", "YBR_FULL"), "YBR_FULL").save_as(
        path, enforce_file_format=True
    )
    assert np.abs(read_dicom_rgb(path)[0].astype(int) - IMAGE).max() <= 3


def test_palette_colour_applies_the_lut(tmp_path):
    ds = _rgb_dataset(IMAGE)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    del ds.PlanarConfiguration
    indices = (np.arange(16 * 20) % 4).astype(np.uint8).reshape(16, 20)
    ds.PixelData = indices.tobytes()
    lut = np.array([[0, 65535, 0, 32896], [0, 0, 65535, 32896], [0, 0, 0, 65535]], np.uint16)
    for channel, name in zip(lut, ("Red", "Green", "Blue"), strict=True):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", channel.tobytes())
    path = tmp_path / "palette.dcm"
    ds.save_as(path, enforce_file_format=True)
    image = read_dicom_rgb(path)[0]
    assert image.shape == (16, 20, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(
        image[0, :4], [[0, 0, 0], [255, 0, 0], [0, 255, 0], [128, 128, 255]]
    )


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_transfer_syntaxes_decode(tmp_path, syntax):
    """Written here with pydicom's encoders; JPEG baseline/lossless and JPEG-LS, which
    have no encoder in this environment, are decoded from pydicom's bundled files below."""
    import pydicom.uid

    image = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ds = _rgb_dataset(image)
    ds.compress(getattr(pydicom.uid, syntax))
    path = tmp_path / f"{syntax}.dcm"
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom_rgb(path)[0], image)


def test_every_bundled_pydicom_file_gives_an_image_or_a_dicom_error():
    import warnings
    from pathlib import Path

    import pydicom.data

    files = sorted(
        p
        for p in (Path(pydicom.data.__file__).parent / "test_files").rglob("*")
        if p.is_file() and p.suffix.lower() in (".dcm", "")
    )
    images = 0
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                image, _ = read_dicom_rgb(path)
            except DicomError as error:
                assert str(path) in str(error)
                continue
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, path
        images += 1
    assert len(files) > 100 and images > 60
    syntaxes = {
        pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
        for p in files
        if p.suffix == ".dcm" and "JPEG" in p.name.upper()
    }
    assert any("JPEG-LS" in s for s in syntaxes) and any("Baseline" in s for s in syntaxes)


def test_ybr_full_422_decodes_to_the_same_picture_as_rgb():
    """pydicom ships one test image as YBR_FULL_422 and as RGB (RLE): they must agree."""
    from pathlib import Path

    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files"
    ybr = read_dicom_rgb(folder / "SC_ybr_full_422_uncompressed.dcm")[0].astype(int)
    rgb = read_dicom_rgb(folder / "SC_rgb_rle.dcm")[0].astype(int)
    assert ybr.shape == rgb.shape == (100, 100, 3)
    assert np.abs(ybr - rgb).mean() < 1.5 and np.abs(ybr - rgb).max() <= 8  # 4:2:2 chroma


def test_huge_announced_size_is_refused_before_decoding(tmp_path):
    ds = _rgb_dataset(IMAGE)
    ds.Rows, ds.Columns = 60000, 60000  # 10 GB of pixels announced, 960 bytes present
    path = tmp_path / "huge.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match="refused before decoding"):
        read_dicom_rgb(path)


def test_deflate_bomb_is_refused(tmp_path):
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _rgb_dataset(IMAGE)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    # Replace the deflated body by 600 MiB of zeros deflated to well under a megabyte.
    from pydicom.filereader import read_file_meta_info

    meta_end = 144 + int(read_file_meta_info(path).FileMetaInformationGroupLength)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 24)
    body = b"".join(compressor.compress(zeros) for _ in range(600 // 16)) + compressor.flush()
    path.write_bytes(path.read_bytes()[:meta_end] + body)
    assert path.stat().st_size < 2**20
    with pytest.raises(DicomError, match="inflates past"):
        read_dicom_rgb(path)
