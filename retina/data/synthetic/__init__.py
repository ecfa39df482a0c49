"""Procedural colour fundus photographs with ICDR-graded diabetic retinopathy lesions.

The default data set of the project: a new user trains on it with no data of their own.
Every image is drawn from a seed, so a data set is reproducible from its spec alone.
Geometry is expressed in units of the field-of-view radius ``r``, so lesions keep their
size relative to the retina whatever the image size.

ICDR grades drawn (what a grader looks for, in the order it escalates):
    0 no DR: no lesion.
    1 mild NPDR: a few microaneurysms only.
    2 moderate NPDR: more microaneurysms, dot/blot haemorrhages, hard exudates.
    3 severe NPDR: haemorrhages in all four quadrants, venous beading, cotton-wool spots.
    4 PDR: neovascularisation (at the disc or elsewhere) and preretinal haemorrhage.

Files are written in the APTOS 2019 layout (``train.csv`` + ``train_images/``). Some scans
are JPEG and some DICOM Ophthalmic Photography; the DICOMs carry synthetic patient names
and IDs, and ``train.csv`` carries the same IDs, so tests can prove that neither leaks.
"""

from retina.data.synthetic.dataset import (
    IMAGES_DIR,
    LABELS_FILE,
    SPEC_FILE,
    ensure_synthetic_dataset,
)
from retina.data.synthetic.dicom_writer import write_ophthalmic_dicom
from retina.data.synthetic.render import render_fundus

__all__ = [
    "IMAGES_DIR",
    "LABELS_FILE",
    "SPEC_FILE",
    "ensure_synthetic_dataset",
    "render_fundus",
    "write_ophthalmic_dicom",
]
