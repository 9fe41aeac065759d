"""On-disk layouts of the synthetic world, one module per real dataset format (see each module's docstring)."""

from __future__ import annotations

from enum import Enum


class Layout(str, Enum):
    """The layouts :func:`cxr.data.synthetic.write_synthetic_dataset` can write."""

    CSV = "csv"
    MIMIC_CXR_JPG = "mimic-cxr-jpg"
    MIMIC_CXR_DICOM = "mimic-cxr-dicom"
    CHEXPERT_PLUS = "chexpert-plus"
    OPENI = "openi"
    OPENI_XML = "openi-xml"
    OPENI_XML_DICOM = "openi-xml-dicom"
    IU_XRAY = "iu-xray"
