"""Synthetic scans as DICOM Ophthalmic Photography, with made-up patient identifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_ophthalmic_dicom(
    path: Path, image: np.ndarray, eye: str, patient_id: str, patient_name: str, uid_seed: str
) -> None:
    """Writes an RGB image as a DICOM Ophthalmic Photography 8 Bit Image with identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    op_8bit = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = op_8bit
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = op_8bit
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19570304"
    ds.PatientSex = "O"
    ds.StudyDate = "20260115"
    ds.InstitutionName = "Synthetic Eye Clinic"
    ds.Modality = "OP"
    ds.ImageLaterality = eye
    ds.Laterality = eye
    # Rows, Columns, samples, bit depths and the pixel data, consistent by construction;
    # the instance UID stays the seeded one, so equal specs give equal files.
    ds.set_pixel_data(np.asarray(image, np.uint8), "RGB", 8, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
