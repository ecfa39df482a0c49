"""Broken inputs among good ones: each costs one line in bad_inputs.csv, never the run."""

import io

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from conftest import smoke_config
from retina.data.synthetic import render_fundus, write_ophthalmic_dicom
from retina.errors import DataError
from retina.training.loop import train

BAD = {  # scan id -> (file name, bytes or a writer, the reason's first words)
    "corrupt_jpeg": ("corrupt_jpeg.jpg", b"\xff\xd8\xff\xe0" + b"\x13" * 500, "cannot decode"),
    "random_png": (
        "random_png.png",
        bytes(np.random.default_rng(0).integers(0, 256, 900, np.uint8)),
        "cannot decode",
    ),
    "empty_png": ("empty_png.png", b"", "cannot decode"),
    "truncated_png": ("truncated_png.png", "truncate", "cannot decode"),
    "truncated_jpeg": ("truncated_jpeg.jpg", "truncate", "cannot decode"),
    "bomb_png": ("bomb_png.png", "bomb", "cannot decode"),
    "no_pixels": ("no_pixels.dcm", "no_pixels", "the DICOM holds no pixel data"),
}


def _encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


def _write_bad(folder, name, content):
    path = folder / name
    good = render_fundus(np.random.default_rng(1), 0, "R", 64)
    if content == "truncate":
        data = _encoded(good, "PNG" if name.endswith(".png") else "JPEG")
        path.write_bytes(data[: len(data) // 2])
    elif content == "bomb":  # 20000 x 20000 zeros: a few hundred kB that decode to 1.2 GB
        Image.new("RGB", (20000, 20000)).save(path)
    elif content == "no_pixels":
        write_ophthalmic_dicom(path, good, "R", "SYN9990001", "Quarantine^Ulla", "x")
        dataset = pydicom.dcmread(path)
        del dataset.PixelData
        dataset.save_as(path)
    else:
        path.write_bytes(content)


@pytest.fixture
def messy_aptos(tmp_path):
    root = tmp_path / "aptos"
    images = root / "train_images"
    images.mkdir(parents=True)
    rows = []
    for index in range(24):
        grade = index % 5
        Image.fromarray(render_fundus(np.random.default_rng(index), grade, "R", 64)).save(
            images / f"good{index}.png"
        )
        rows.append(
            {"id_code": f"good{index}", "diagnosis": str(grade), "patient_id": f"P{index // 2}"}
        )
    for scan_id, (name, content, _) in BAD.items():
        _write_bad(images, name, content)
        rows.append({"id_code": scan_id, "diagnosis": "1", "patient_id": f"B{scan_id}"})
    # Usable but doubtful scans: kept for training, listed in gradability.csv.
    photo = render_fundus(np.random.default_rng(99), 2, "L", 128)
    Image.fromarray((photo * 0.06).astype(np.uint8)).save(images / "dark.png")
    Image.fromarray(ndimage.gaussian_filter(photo, (4, 4, 0))).save(images / "blurred.png")
    rows += [
        {"id_code": "dark", "diagnosis": "2", "patient_id": "D1"},
        {"id_code": "blurred", "diagnosis": "2", "patient_id": "D2"},
    ]
    rows += [
        {"id_code": "missing", "diagnosis": "0", "patient_id": "M1"},
        {"id_code": "good0", "diagnosis": "0", "patient_id": "P0"},  # duplicate row
        {"id_code": "good1", "diagnosis": "severe", "patient_id": "P0"},
    ]  # unknown label
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def _config(tmp_path, root, on_error):
    return smoke_config(
        tmp_path,
        [
            "data=aptos2019",
            f"data.on_error={on_error}",
            "train.epochs=1",
            "train.evaluate_test=false",
        ],
        data_root=root,
    )


def test_skip_reports_every_bad_input_and_trains_on_the_rest(tmp_path, messy_aptos):
    run_dir = tmp_path / "run"
    train(_config(tmp_path, messy_aptos, "skip"), run_dir)
    report = pd.read_csv(run_dir / "bad_inputs.csv", dtype=str, keep_default_na=False)
    reasons = dict(zip(report["path"], report["reason"], strict=True))
    for name, _, reason in BAD.values():
        assert reasons[f"train_images/{name}"].startswith(reason), name
    assert reasons["missing"].startswith("missing file")
    assert reasons["good1"].startswith("unknown label 'severe'")
    assert any(r.startswith("duplicate of row") for r in reasons.values())
    assert len(report) == len(BAD) + 3
    manifest = pd.read_csv(run_dir / "manifest.csv", dtype=str)
    assert len(manifest) == 26 and {"dark", "blurred"} <= set(manifest["scan_id"])
    flagged = pd.read_csv(run_dir / "gradability.csv", dtype=str)
    assert dict(zip(flagged["path"], flagged["gradability"], strict=True)) == {
        "train_images/dark.png": "too dark",
        "train_images/blurred.png": "too blurred",
    }
    assert (run_dir / "latest").is_dir()
    for path in run_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"SYN9990001" not in content and b"Quarantine" not in content, path


def test_fail_stops_before_training(tmp_path, messy_aptos):
    run_dir = tmp_path / "run"
    with pytest.raises(DataError, match=r"unusable inputs .*bad_inputs.csv"):
        train(_config(tmp_path, messy_aptos, "fail"), run_dir)
    assert (run_dir / "bad_inputs.csv").exists() and not (run_dir / "latest").exists()
