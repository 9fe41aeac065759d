"""Layout ``mimic-cxr-dicom``: the MIMIC-CXR DICOM release tree, plus the JPG-release CSVs.

Files (datasets.md §1, §4)::

    files/p1X/p1XXXXXXX/s5XXXXXXX/<dicom_id>.dcm     CR/DX DICOM (pydicom 3 ``set_pixel_data``)
    files/p1X/p1XXXXXXX/s5XXXXXXX.txt                report in the MIMIC text format
    cxr-record-list.csv.gz                           subject_id,study_id,dicom_id,path (path to the .dcm)
    cxr-study-list.csv.gz                            subject_id,study_id,path (path to the .txt)
    mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz   as in the JPG layout (views, splits, labels)

The DICOMs mix what real CR/DX exports do: MONOCHROME1 and MONOCHROME2, BitsStored 12 and 16, with or without
RescaleSlope/Intercept, WindowCenter/Width covering the image, the ViewPosition tag, and transfer syntaxes
Explicit VR Little Endian / RLE Lossless / JPEG 2000 Lossless. A MONOCHROME1 file stores inverted values, so
decoding it correctly (rescale -> VOI -> invert -> min-max) gives the MONOCHROME2 rendering, i.e. the phantom.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from cxr.data.synthetic.layouts.files import layout_rng, render_views, to_uint16, write_csv
from cxr.data.synthetic.layouts.mimic_common import (
    metadata_view, study_datetime, study_dir, write_jpg_release_csvs, write_reports,
)
from cxr.data.synthetic.layouts.mimic_jpg import mimic_truth
from cxr.data.synthetic.truth import TruthRecord, TruthView

RECORD_LIST_COLUMNS = ("subject_id", "study_id", "dicom_id", "path")
STUDY_LIST_COLUMNS = ("subject_id", "study_id", "path")
_CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
_DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


class TransferSyntax(str, Enum):
    """Pixel encodings the layout writes."""

    UNCOMPRESSED = "uncompressed"
    RLE = "rle"
    JPEG2000 = "jpeg2000"

    @property
    def uid(self) -> str:
        return {TransferSyntax.UNCOMPRESSED: ExplicitVRLittleEndian, TransferSyntax.RLE: RLELossless,
                TransferSyntax.JPEG2000: JPEG2000Lossless}[self]


@dataclass(frozen=True)
class DicomEncoding:
    """How one image is stored."""

    photometric: str  # MONOCHROME1 / MONOCHROME2
    bits_stored: int  # 12 or 16
    slope: float | None  # RescaleSlope (None: no rescale tags)
    intercept: float | None
    syntax: TransferSyntax
    modality: str  # CR / DX


def choose_encoding(rng: np.random.Generator) -> DicomEncoding:
    """A seeded mix of the encodings seen in hospital CR/DX exports."""
    rescale = rng.random() < 0.5
    return DicomEncoding(
        photometric="MONOCHROME1" if rng.random() < 0.4 else "MONOCHROME2",
        bits_stored=12 if rng.random() < 0.6 else 16,
        slope=float(rng.choice([1.0, 0.5, 2.0])) if rescale else None,
        intercept=float(rng.choice([0.0, -1024.0, 100.0])) if rescale else None,
        syntax=TransferSyntax(str(rng.choice([s.value for s in TransferSyntax], p=[0.4, 0.3, 0.3]))),
        modality="CR" if rng.random() < 0.5 else "DX")


def encode_dicom(img: np.ndarray, enc: DicomEncoding, *, dicom_id: str, study, view: str) -> Dataset:
    """Build the DICOM dataset of one phantom image (deterministic UIDs from the ids)."""
    maxval = 2**enc.bits_stored - 1
    stored = to_uint16(img, enc.bits_stored)
    if enc.photometric == "MONOCHROME1":
        stored = (maxval - stored).astype(np.uint16)  # MONOCHROME1: high values display dark
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = _CR_SOP_CLASS if enc.modality == "CR" else _DX_SOP_CLASS
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["sop", dicom_id])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", study.study_id])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", study.study_id, view])
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = enc.modality
    ds.PatientID = study.patient_id
    ds.PatientName = "___"
    ds.StudyID = study.study_id
    ds.StudyDate, ds.StudyTime = study_datetime(study)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.set_pixel_data(stored, enc.photometric, enc.bits_stored, generate_instance_uid=False)
    lo, hi = float(stored.min()), float(stored.max())
    if enc.slope is not None:
        ds.RescaleSlope = f"{enc.slope:g}"
        ds.RescaleIntercept = f"{enc.intercept:g}"
        ds.RescaleType = "US"
        a, b = sorted((lo * enc.slope + enc.intercept, hi * enc.slope + enc.intercept))
    else:
        a, b = lo, hi
    # The window spans all values, so VOI is linear and min-max recovers the phantom exactly.
    ds.WindowCenter = f"{(a + b) / 2:.1f}"
    ds.WindowWidth = f"{max(2.0, (b - a) * 1.1 + 2):.1f}"
    ds.VOILUTFunction = "LINEAR"
    if enc.syntax is not TransferSyntax.UNCOMPRESSED:
        ds.compress(enc.syntax.uid, generate_instance_uid=False)
    return ds


def write_mimic_dicom_layout(out_dir: Path, studies: list, image_size: int, gzip: bool = True) -> list[TruthRecord]:
    """Write the MIMIC-CXR DICOM tree; returns the truth records."""
    ext = ".csv.gz" if gzip else ".csv"
    truth, records, study_rows = [], [], []
    for study in studies:
        views = []
        for i, (view, img) in enumerate(zip(study.views, render_views(study, image_size))):
            rel = f"{study_dir(study)}/{view.image_id}.dcm"
            vp = metadata_view(study, i).value
            enc = choose_encoding(layout_rng(study, 100 + i))
            ds = encode_dicom(img, enc, dicom_id=view.image_id, study=study, view=vp)
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(out_dir / rel, enforce_file_format=True)
            records.append([study.patient_id, study.study_id, view.image_id, rel])
            views.append(TruthView(view.image_id, vp, rel))
        study_rows.append([study.patient_id, study.study_id, f"{study_dir(study)}.txt"])
        truth.append(mimic_truth(study, views, "mimic-cxr-dicom"))
    write_reports(out_dir, studies)
    write_csv(out_dir / f"cxr-record-list{ext}", RECORD_LIST_COLUMNS, records, gzip)
    write_csv(out_dir / f"cxr-study-list{ext}", STUDY_LIST_COLUMNS, study_rows, gzip)
    write_jpg_release_csvs(out_dir, studies, image_size, gzip)
    return truth
