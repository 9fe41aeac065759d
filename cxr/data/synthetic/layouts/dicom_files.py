"""Synthetic radiograph DICOM files: how each image is encoded, and a byte-deterministic writer.

Real CR/DX exports mix polarities, bit depths, rescale/VOI attributes and transfer syntaxes; a decoder has to
undo all of them (datasets.md §4.2). Each file is written so that the PS3.4 pipeline (rescale -> VOI window ->
invert for MONOCHROME1/INVERSE) gives back the phantom: a MONOCHROME1 file stores inverted values, and the
window spans the full stored range. UIDs are derived from the image id (``2.25.<hash>``) so the same seed gives
the same bytes (``cxr.data.dicom.write_dicom`` draws random UIDs, hence this writer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
#: Smallest side openjpeg encodes with its default 6 resolution levels; smaller images fall back to RLE.
MIN_JPEG2000_SIZE = 32


class DicomSyntax(str, Enum):
    """Transfer syntaxes the synthetic files use (all encodable offline: native, RLE, pylibjpeg-openjpeg)."""

    EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
    RLE_LOSSLESS = "1.2.840.10008.1.2.5"
    JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


@dataclass(frozen=True)
class DicomEncoding:
    """How one image is stored: modality, polarity, depth, rescale and transfer syntax."""

    modality: str  # CR or DX
    photometric: str  # MONOCHROME1 or MONOCHROME2
    bits_stored: int  # 12 or 16 (BitsAllocated is 16)
    rescale_slope: float | None  # None: no rescale attributes at all
    rescale_intercept: float | None
    syntax: DicomSyntax


def sample_encoding(rng: np.random.Generator) -> DicomEncoding:
    """A mix like a hospital archive: ~40% MONOCHROME1, half 12-bit, a third each of the three syntaxes."""
    modality = "CR" if rng.random() < 0.5 else "DX"
    photometric = "MONOCHROME1" if rng.random() < 0.4 else "MONOCHROME2"
    bits = 12 if rng.random() < 0.5 else 16
    u = rng.random()
    if u < 0.35:
        slope, intercept = None, None
    elif u < 0.7:
        slope, intercept = 1.0, 0.0
    else:
        slope, intercept = (0.5, -1024.0) if rng.random() < 0.5 else (2.0, 100.0)
    syntax = list(DicomSyntax)[int(rng.integers(len(DicomSyntax)))]
    return DicomEncoding(modality, photometric, bits, slope, intercept, syntax)


def stored_values(img: np.ndarray, enc: DicomEncoding) -> np.ndarray:
    """Quantise a [0, 1] image to stored values (inverted for MONOCHROME1)."""
    top = float(2**enc.bits_stored - 1)
    values = np.clip(img, 0.0, 1.0)
    if enc.photometric == "MONOCHROME1":
        values = 1.0 - values
    return np.round(values * top).astype(np.uint16)


def uid_for(key: str) -> str:
    """A deterministic UUID-derived DICOM UID (``2.25.<int>``, PS3.5 B.2) for ``key``."""
    return "2.25." + str(int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:30], 16))


def write_radiograph(path: Path, img: np.ndarray, enc: DicomEncoding, *, sop_key: str, study_key: str,
                     series_key: str, tags: dict[str, object]) -> Path:
    """Write ``img`` (float [0, 1]) as a CR/DX DICOM file encoded per ``enc``; ``tags`` are set verbatim."""
    from pydicom.dataset import Dataset, FileMetaDataset

    sop_class = CR_STORAGE if enc.modality == "CR" else DX_PRESENTATION_STORAGE
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid_for(sop_key)
    meta.TransferSyntaxUID = DicomSyntax.EXPLICIT_LITTLE.value
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid_for(study_key)
    ds.SeriesInstanceUID = uid_for(series_key)
    ds.Modality = enc.modality
    ds.BodyPartExamined = "CHEST"
    for key, value in tags.items():
        setattr(ds, key, value)
    # generate_instance_uid=False: pydicom would otherwise draw a random SOP Instance UID (bytes must not vary).
    ds.set_pixel_data(stored_values(img, enc), photometric_interpretation=enc.photometric,
                      bits_stored=enc.bits_stored, generate_instance_uid=False)
    slope = 1.0 if enc.rescale_slope is None else enc.rescale_slope
    intercept = 0.0 if enc.rescale_intercept is None else enc.rescale_intercept
    if enc.rescale_slope is not None:
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "US"
    # A LINEAR window (PS3.3 C.11.2.1.2) over the whole rescaled stored range: no clipping, so decoding
    # recovers the phantom exactly up to quantisation.
    lo, hi = intercept, (2**enc.bits_stored - 1) * slope + intercept
    ds.WindowCenter = f"{(lo + hi) / 2 + 0.5:g}"
    ds.WindowWidth = f"{hi - lo + 1:g}"
    if enc.modality == "DX":  # the DX IOD requires the presentation LUT shape (INVERSE with MONOCHROME1)
        ds.PresentationLUTShape = "INVERSE" if enc.photometric == "MONOCHROME1" else "IDENTITY"
    syntax = enc.syntax
    if syntax is DicomSyntax.JPEG2000_LOSSLESS and min(img.shape) < MIN_JPEG2000_SIZE:
        syntax = DicomSyntax.RLE_LOSSLESS  # openjpeg's 6 resolution levels need >= 32 px per side
    if syntax is not DicomSyntax.EXPLICIT_LITTLE:
        ds.compress(syntax.value, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
