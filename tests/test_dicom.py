import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from retina.data.dicom import read_dicom_rgb
from retina.data.synthetic import write_ophthalmic_dicom
from retina.errors import DicomError

SALT = "test-salt"


def test_round_trip_keeps_pixels_and_drops_identifiers(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    path = tmp_path / "scan.dcm"
    write_ophthalmic_dicom(path, image, "L", "MRN-31337", "Doe^Jane", uid_seed="x")
    pixels, info = read_dicom_rgb(path, SALT)
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
    pixels, _ = read_dicom_rgb(_grayscale(tmp_path, photometric, bits), SALT)
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
        read_dicom_rgb(path, SALT)
    assert str(path) in str(error.value)


def test_garbage_file_raises_dicom_error(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\x00not a dicom" * 50)
    with pytest.raises(DicomError, match="junk.dcm"):
        read_dicom_rgb(path, SALT)


# --- photometric interpretations, planar configuration, compression, bundled files ---


def _rgb_dataset(image, photometric="RGB", planar=0):
    return _dataset(image, photometric, planar=planar)


IMAGE = np.random.default_rng(3).integers(0, 256, (16, 20, 3), dtype=np.uint8)


def test_planar_configuration_one(tmp_path):
    path = tmp_path / "planar.dcm"
    _rgb_dataset(IMAGE, planar=1).save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom_rgb(path, SALT)[0], IMAGE)


def test_ybr_full_becomes_rgb(tmp_path):
    from pydicom.pixels import convert_color_space

    path = tmp_path / "ybr.dcm"
    _rgb_dataset(convert_color_space(IMAGE, "RGB", "YBR_FULL"), "YBR_FULL").save_as(
        path, enforce_file_format=True
    )
    assert np.abs(read_dicom_rgb(path, SALT)[0].astype(int) - IMAGE).max() <= 3


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
    image = read_dicom_rgb(path, SALT)[0]
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
    np.testing.assert_array_equal(read_dicom_rgb(path, SALT)[0], image)


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
                image, _ = read_dicom_rgb(path, SALT)
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
    ybr = read_dicom_rgb(folder / "SC_ybr_full_422_uncompressed.dcm", SALT)[0].astype(int)
    rgb = read_dicom_rgb(folder / "SC_rgb_rle.dcm", SALT)[0].astype(int)
    assert ybr.shape == rgb.shape == (100, 100, 3)
    assert np.abs(ybr - rgb).mean() < 1.5 and np.abs(ybr - rgb).max() <= 8  # 4:2:2 chroma


def test_huge_announced_size_is_refused_before_decoding(tmp_path):
    ds = _rgb_dataset(IMAGE)
    ds.Rows, ds.Columns = 60000, 60000  # 10 GB of pixels announced, 960 bytes present
    path = tmp_path / "huge.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match="refused before decoding"):
        read_dicom_rgb(path, SALT)


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
        read_dicom_rgb(path, SALT)


# --- The display pipeline: Modality LUT, VOI LUT or window, MONOCHROME1 inverted ----------


def _monochrome(values, photometric, bits_stored, **attributes):
    """A MONOCHROME Secondary Capture dataset with 16-bit samples and ``attributes``."""
    ds = _dataset(values.astype(np.uint16), photometric, samples=1)
    ds.set_pixel_data(values.astype(np.uint16), photometric, bits_stored)
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def test_monochrome2_applies_rescale_then_window(tmp_path):
    stored = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    slope, intercept, centre, width = 2.0, -1000.0, 1000.0, 2000.0
    ds = _monochrome(
        stored,
        "MONOCHROME2",
        12,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        WindowCenter=centre,
        WindowWidth=width,
    )
    path = tmp_path / "windowed.dcm"
    ds.save_as(path, enforce_file_format=True)
    # DICOM PS3.3 C.11.2.1.2.1, LINEAR, written out here as the reference.
    x = stored * slope + intercept
    c, w = centre - 0.5, width - 1
    expected = np.where(
        x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, ((x - c) / w + 0.5) * 255)
    )
    image, _ = read_dicom_rgb(path, SALT)
    np.testing.assert_array_equal(image[..., 0], np.round(expected).astype(np.uint8))
    assert (image[..., 0] == image[..., 2]).all()
    assert 0.3 < (image[..., 0] == 255).mean() < 0.8  # the window saturates the top


def test_monochrome1_applies_its_voi_lut_and_is_inverted(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    stored = (np.arange(4096) % 1024).astype(np.uint16).reshape(64, 64)
    lut = np.round(255 * (np.arange(256) / 255) ** 0.5).astype(np.uint16)  # a gamma curve
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data; its VR is ambiguous (US/OW)
    ds = _monochrome(stored, "MONOCHROME1", 10, VOILUTSequence=Sequence([item]))
    path = tmp_path / "voi.dcm"
    ds.save_as(path, enforce_file_format=True)
    expected = 255 - lut[np.clip(stored, 0, 255)]  # beyond the LUT: its last entry
    image, _ = read_dicom_rgb(path, SALT)
    np.testing.assert_array_equal(image[..., 1], expected.astype(np.uint8))


def test_a_multi_frame_file_decodes_only_its_first_frame(tmp_path):
    import tracemalloc

    from retina.data.dicom import read_first_frame

    frames = np.random.default_rng(5).integers(0, 4096, (50, 512, 512), dtype=np.uint16)
    paths = {}
    for count in (1, 50):
        ds = _monochrome(frames[0], "MONOCHROME2", 12)
        ds.set_pixel_data(frames[:count], "MONOCHROME2", 12)
        paths[count] = tmp_path / f"frames-{count}.dcm"
        ds.save_as(paths[count], enforce_file_format=True)
    frame_bytes = frames[0].nbytes
    peaks = {}
    tracemalloc.start()
    try:
        for name, read in (
            ("decode", read_first_frame),
            ("whole", lambda path: read_dicom_rgb(path, SALT)),
        ):
            for count, path in paths.items():
                read(path)  # once first: pydicom's first call fills caches of its own
                result = None  # the previous result would count towards this peak
                before, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                result = read(path)
                peaks[name, count] = (tracemalloc.get_traced_memory()[1] - before) / frame_bytes
    finally:
        tracemalloc.stop()
    print({key: round(value, 2) for key, value in peaks.items()})
    np.testing.assert_array_equal(read_first_frame(paths[50]), frames[0])
    expected = np.round(frames[0] * (255 / 4095)).astype(np.uint8)
    np.testing.assert_array_equal(result[0][..., 0], expected)
    assert peaks["decode", 50] < 2.5  # frames, of the 50 in the file
    # The display steps work on the one frame: the same memory as for a 1-frame file.
    assert peaks["whole", 50] < 1.1 * peaks["whole", 1]
