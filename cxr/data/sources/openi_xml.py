"""Open-I as the NLM distributes it: ``ecgen-radiology/<n>.xml`` reports, ``NLMCXR_png`` or ``NLMCXR_dcm`` images.

Each XML file is one ``eCitation`` (one study): ``<uId id="CXR<n>"/>``, ``<AbstractText Label="FINDINGS">`` /
``"IMPRESSION"`` / ``"COMPARISON"`` / ``"INDICATION"`` under ``MedlineCitation/Article/Abstract``, MeSH
``<major>``/``<minor>`` terms, and one ``<parentImage id="CXR<n>_...">`` per image. The images are
``NLMCXR_png/<parentImage id>.png`` (``NLMCXR_png.tgz``) or DICOMs from ``NLMCXR_dcm.tgz`` (see
:data:`DICOM_CANDIDATES`). The XML names no view: PNG images are ``UNKNOWN`` (eligible under ``FRONTAL``);
DICOM images take ``ViewPosition`` from their header. Labels come from the MeSH terms through the same term map as
the Kaggle-CSV source (:data:`cxr.data.sources.openi.TERM_TO_OBSERVATION`).

Study id = the ``uId`` (``CXR1``), patient = study (the release has no patient ids). Every study goes to one
configured split (TEST by default: Open-I is a held-out set).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cxr.data.sources.base import DatasetSource
from cxr.data.sources.openi import labels_from_terms
from cxr.data.validation import ProblemKind, ProblemLog
from cxr.records import ImageRef, ReportSections, Split, StudyRecord, ViewPosition

REPORTS_DIR = "ecgen-radiology"
PNG_DIR = "NLMCXR_png"
DICOM_DIR = "NLMCXR_dcm"
#: Where a parentImage ``CXR<n>_<rest>`` is looked for in the DICOM release, in this order (relative to the
#: DICOM folder). The tarball's inner layout varies between mirrors, so each is tried; the first is reported
#: when none exists.
DICOM_CANDIDATES = ("{n}/{rest}.dcm", "{n}/{id}.dcm", "{rest}.dcm", "{id}.dcm")
#: The four report sections of the release, as ``AbstractText`` labels.
SECTION_LABELS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")


class OpenIImageFormat(str, Enum):
    """Which image archive was unpacked: ``NLMCXR_png.tgz`` (PNG) or ``NLMCXR_dcm.tgz`` (DICOM)."""

    PNG = "png"
    DICOM = "dcm"


class MeshTerms(str, Enum):
    """Which MeSH terms give the labels: the ``<major>`` terms (as the Kaggle ``MeSH`` column) or major + minor."""

    MAJOR = "major"
    MAJOR_AND_MINOR = "major_and_minor"


class XmlReportError(ValueError):
    """An Open-I XML file cannot be used (not well-formed, or no ``uId``); the message names the defect."""


@dataclass(frozen=True)
class OpenIXmlReport:
    """What one ``ecgen-radiology`` XML file holds (texts stripped; an empty section is None)."""

    uid: str
    sections: dict[str, str | None]
    mesh_major: tuple[str, ...]
    mesh_minor: tuple[str, ...]
    image_ids: tuple[str, ...]


def _text(elem: ET.Element | None) -> str | None:
    if elem is None:
        return None
    text = " ".join("".join(elem.itertext()).split())
    return text or None


def parse_openi_xml(path: Path) -> OpenIXmlReport:
    """Parse one report file; raises :class:`XmlReportError` (not well-formed, wrong root, no uId)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise XmlReportError(f"not well-formed XML ({err})") from None
    if root.tag != "eCitation":
        raise XmlReportError(f"root element is <{root.tag}>, expected <eCitation>")
    uid_elem = root.find("uId")
    uid = (uid_elem.get("id") or "").strip() if uid_elem is not None else ""
    if not uid:
        raise XmlReportError("no <uId id=...> element")
    sections: dict[str, str | None] = dict.fromkeys(SECTION_LABELS)
    for abstract in root.iter("AbstractText"):
        label = (abstract.get("Label") or "").strip().upper()
        if label in sections and sections[label] is None:
            sections[label] = _text(abstract)
    mesh = root.find("MeSH")
    major = tuple(t for t in (_text(e) for e in (mesh.iter("major") if mesh is not None else ())) if t)
    minor = tuple(t for t in (_text(e) for e in (mesh.iter("minor") if mesh is not None else ())) if t)
    images = tuple(i for i in ((e.get("id") or "").strip() for e in root.iter("parentImage")) if i)
    return OpenIXmlReport(uid=uid, sections=sections, mesh_major=major, mesh_minor=minor, image_ids=images)


def _dicom_view(path: Path) -> ViewPosition:
    """``ViewPosition`` from a DICOM header (pixels are not read); UNKNOWN when absent or unreadable."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"])
    except (OSError, ValueError, pydicom.errors.InvalidDicomError):
        return ViewPosition.UNKNOWN  # the set-up image probe reports the file itself
    return ViewPosition.parse(getattr(ds, "ViewPosition", None))


class OpenIXmlSource(DatasetSource):
    """Open-I studies from the NLM release (one XML report per study) with PNG or DICOM images.

    Args:
        root: folder where the NLM archives were unpacked (holds ``ecgen-radiology/`` and ``NLMCXR_png/`` or
            ``NLMCXR_dcm/``).
        name: source name.
        reports_dir: XML folder, relative to ``root`` or absolute.
        images_dir: image folder, relative to ``root`` or absolute (default per ``image_format``).
        image_format: ``png`` (``NLMCXR_png/<parentImage id>.png``) or ``dcm`` (the DICOM release).
        split: the split every study goes to (held-out: ``test`` by default).
        mesh_terms: ``major`` or ``major_and_minor`` MeSH terms give the labels.
    """

    def __init__(self, root: str, name: str = "openi", reports_dir: str = REPORTS_DIR,
                 images_dir: str | None = None, image_format: OpenIImageFormat = OpenIImageFormat.PNG,
                 split: Split = Split.TEST, mesh_terms: MeshTerms = MeshTerms.MAJOR) -> None:
        super().__init__(name)
        self.root = Path(root).expanduser().absolute()
        self.image_format = OpenIImageFormat(image_format)
        default_images = PNG_DIR if self.image_format is OpenIImageFormat.PNG else DICOM_DIR
        self.reports_dir = self._under_root(reports_dir)
        self.images_dir = self._under_root(images_dir or default_images)
        self.split = Split(split)
        self.mesh_terms = MeshTerms(mesh_terms)

    def _under_root(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p

    def xml_files(self) -> list[Path]:
        """The report files, in numeric order of their names (``1.xml``, ``2.xml``, ..., ``10.xml``)."""
        return sorted(self.reports_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))

    def check(self, problems: ProblemLog) -> None:
        if not self.reports_dir.is_dir():
            problems.add(ProblemKind.MISSING_FILE, str(self.reports_dir),
                         f"report folder not found (unpack NLMCXR_reports.tgz; it holds {REPORTS_DIR}/)")
        elif not any(self.reports_dir.glob("*.xml")):
            problems.add(ProblemKind.MISSING_FILE, str(self.reports_dir), "report folder has no *.xml files")
        if not self.images_dir.is_dir():
            problems.add(ProblemKind.MISSING_FILE, str(self.images_dir), "image folder not found")

    def image_path(self, image_id: str) -> Path:
        """Where the image of ``parentImage id`` is (for DICOM the first existing candidate, else the first)."""
        if self.image_format is OpenIImageFormat.PNG:
            return self.images_dir / f"{image_id}.png"
        head, _, rest = image_id.partition("_")
        n = head[3:] if head.upper().startswith("CXR") else head
        paths = [self.images_dir / c.format(n=n, rest=rest or image_id, id=image_id) for c in DICOM_CANDIDATES]
        return next((p for p in paths if p.is_file()), paths[0])

    def load(self, problems: ProblemLog) -> list[StudyRecord]:
        self.check(problems)
        problems.raise_fatal(f"source {self.name!r}")
        records: list[StudyRecord] = []
        seen: dict[str, Path] = {}
        for path in self.xml_files():
            try:
                rep = parse_openi_xml(path)
            except (XmlReportError, OSError) as err:
                problems.add(ProblemKind.MALFORMED_FILE, str(path), str(err))
                continue
            key = f"{self.name}:{rep.uid}"
            if rep.uid in seen:
                problems.add(ProblemKind.DUPLICATE_ID, str(path), f"uId {rep.uid} also in {seen[rep.uid].name}",
                             field="uId", study_key=key)
                continue
            seen[rep.uid] = path
            records.append(self._record(path, rep, key, problems))
        return records

    def _record(self, path: Path, rep: OpenIXmlReport, key: str, problems: ProblemLog) -> StudyRecord:
        report = ReportSections(findings=rep.sections["FINDINGS"], impression=rep.sections["IMPRESSION"],
                                full_text="")
        if report.is_empty:
            problems.add(ProblemKind.EMPTY_REPORT, str(path), "no FINDINGS or IMPRESSION text",
                         field="AbstractText", study_key=key)
        if not rep.image_ids:
            problems.add(ProblemKind.NO_USABLE_IMAGE, str(path), "the report names no <parentImage>",
                         field="parentImage", study_key=key)
        images = []
        for image_id in rep.image_ids:
            image = self.image_path(image_id)
            if not image.is_file():
                problems.add(ProblemKind.MISSING_IMAGE, str(path), f"image file not found: {image}",
                             field=f"parentImage {image_id}", study_key=key, image_path=str(image))
                view = ViewPosition.UNKNOWN
            else:
                view = _dicom_view(image) if self.image_format is OpenIImageFormat.DICOM else ViewPosition.UNKNOWN
            images.append(ImageRef(str(image), view, image_id))
        terms = list(rep.mesh_major) + (list(rep.mesh_minor) if self.mesh_terms is MeshTerms.MAJOR_AND_MINOR else [])
        return StudyRecord(study_id=rep.uid, patient_id=rep.uid, split=self.split, images=tuple(images),
                           report=report, labels=labels_from_terms(terms), source=self.name)
