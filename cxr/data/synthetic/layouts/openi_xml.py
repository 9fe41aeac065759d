"""Layouts ``openi-xml`` and ``openi-xml-dicom``: Open-I as the NLM distributes it (datasets.md §8.1).

Files::

    ecgen-radiology/<n>.xml                      one eCitation per report, n = 1, 2, ...
    NLMCXR_png/CXR<n>_<k>_IM-<ssss>-<v>001.png   8-bit PNGs              (openi-xml)
    NLMCXR_dcm/<n>/<k>_IM-<ssss>-<v>001.dcm      CR/DX DICOMs with ViewPosition   (openi-xml-dicom)

Each XML holds ``<uId id="CXR<n>"/>``, ``<IUXRId id="<n>"/>``, the four ``AbstractText`` sections
(COMPARISON, INDICATION, FINDINGS, IMPRESSION; an absent section is an empty element, as in the release),
``<MeSH>`` with ``<major>`` terms (the same vocabulary as the Kaggle CSV: ``normal``, ``Cardiomegaly/mild``,
``No Indexing``, ...) and sometimes an unmapped ``<minor>`` term, one ``<parentImage id=...>`` with a caption and
``<panel><url>`` per image, and the CC BY-NC-ND licence elements. De-identification is ``XXXX``. Every study is
``test`` in the truth file (Open-I is a held-out set); study and patient id = ``CXR<n>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from cxr.data.synthetic.layouts.dicom_files import sample_encoding, write_radiograph
from cxr.data.synthetic.layouts.files import layout_rng, render_views, write_png
from cxr.data.synthetic.layouts.openi import _deid, mesh_and_problems
from cxr.data.synthetic.truth import TruthRecord, TruthView
from cxr.records import Split

REPORTS_DIR = "ecgen-radiology"
PNG_DIR = "NLMCXR_png"
DICOM_DIR = "NLMCXR_dcm"
_INDICATIONS = ("XXXX-year-old male with chest pain.", "Shortness of breath.", "XXXX-year-old female, cough.",
                "Preop evaluation", "")
_MINOR_TERMS = ("Thoracic Vertebrae/degenerative/mild", "Spine/degenerative", "Lung/hypoinflation",
                "Granulomatous Disease", "Aorta/tortuous")


def image_ids(uid: int, study, rng) -> list[str]:
    """``CXR<n>_<k>_IM-<series>-<v>001`` per view (the parentImage ids; PNG stems)."""
    series = int(rng.integers(1, 9999))
    return [f"CXR{uid}_{k + 1}_IM-{series:04d}-{k + 1}001" for k in range(len(study.views))]


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.SubElement(parent, tag, attrs)
    if text:
        elem.text = text
    return elem


def report_xml(uid: int, study, ids: list[str], rng) -> bytes:
    """The eCitation document of one study (UTF-8 bytes with an XML declaration)."""
    root = ET.Element("eCitation")
    _sub(root, "meta", type="rr")
    _sub(root, "uId", id=f"CXR{uid}")
    _sub(root, "pmcId", id=str(uid))
    _sub(root, "docSource", "CXR")
    _sub(root, "IUXRId", id=str(uid))
    _sub(root, "licenseType", "open-access")
    _sub(root, "licenseURL", "http://creativecommons.org/licenses/by-nc-nd/4.0/")
    _sub(root, "ccLicense", "byncnd")
    _sub(root, "publisher", "Indiana University")
    _sub(root, "title", "Indiana University Chest X-ray Collection")
    article = _sub(_sub(root, "MedlineCitation", Owner="Indiana University", Status="supplied by publisher"),
                   "Article", PubModel="Electronic")
    _sub(article, "ArticleTitle", "Indiana University Chest X-ray Collection")
    abstract = _sub(article, "Abstract")
    sections = {"COMPARISON": "None." if study.study_order == 0 else "XXXX",
                "INDICATION": str(rng.choice(_INDICATIONS)),
                "FINDINGS": _deid(study.findings_text), "IMPRESSION": _deid(study.impression_text)}
    for label, text in sections.items():
        _sub(abstract, "AbstractText", text, Label=label)
    _sub(article, "Affiliation", "Indiana University")
    mesh = _sub(root, "MeSH")
    major, _ = mesh_and_problems(study)
    for term in major.split(";"):
        _sub(mesh, "major", term)
    if rng.random() < 0.3:  # an unmapped minor term: labels must not change with MAJOR_AND_MINOR
        _sub(mesh, "minor", str(rng.choice(_MINOR_TERMS)))
    caption = "Xray Chest PA and Lateral" if len(ids) > 1 else "Xray Chest PA"
    for k, image_id in enumerate(ids, 1):
        parent = _sub(root, "parentImage", id=image_id)
        _sub(parent, "figureId", f"F{k}")
        _sub(parent, "caption", caption)
        _sub(_sub(parent, "panel", type="single"), "url", f"/hadoop/storage/radiology/extract/{image_id}.jpg")
    ET.indent(root, space="   ")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def dicom_relpath(image_id: str) -> str:
    """``<n>/<rest>.dcm`` for ``CXR<n>_<rest>`` (the first place the source looks)."""
    head, _, rest = image_id.partition("_")
    return f"{head[3:]}/{rest}.dcm"


def write_openi_xml_layout(out_dir: Path, studies: list, image_size: int, dicom: bool = False) -> list[TruthRecord]:
    """Write the XML reports and the PNG (or DICOM) images; returns the truth records."""
    truth = []
    for uid, study in enumerate(studies, 1):
        rng = layout_rng(study, 37)
        ids = image_ids(uid, study, rng)
        xml_path = out_dir / REPORTS_DIR / f"{uid}.xml"
        xml_path.parent.mkdir(parents=True, exist_ok=True)
        xml_path.write_bytes(report_xml(uid, study, ids, rng))
        views = []
        for image_id, view, img in zip(ids, study.views, render_views(study, image_size), strict=True):
            if dicom:
                rel = f"{DICOM_DIR}/{dicom_relpath(image_id)}"
                write_radiograph(out_dir / rel, img, sample_encoding(rng), sop_key=image_id,
                                 study_key=f"CXR{uid}", series_key=f"CXR{uid}/{view.index}",
                                 tags={"ViewPosition": view.view.value, "PatientID": f"CXR{uid}"})
                truth_view = view.view.value
            else:
                rel = f"{PNG_DIR}/{image_id}.png"
                write_png(out_dir / rel, img, bits=8)
                truth_view = "UNKNOWN"  # the PNG release names no view (the world's view is in the phantom only)
            views.append(TruthView(image_id, truth_view, rel))
        truth.append(TruthRecord(
            study_id=f"CXR{uid}", patient_id=f"CXR{uid}", split=Split.TEST.value, views=tuple(views),
            findings_text=_deid(study.findings_text), impression_text=_deid(study.impression_text),
            labels=tuple(int(v) for v in study.labels), layout="openi-xml-dicom" if dicom else "openi-xml",
            world_study_id=study.study_id))
    return truth
