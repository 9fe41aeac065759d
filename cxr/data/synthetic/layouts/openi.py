"""Layout ``openi``: the Indiana University chest X-ray collection (Open-I) in its two-CSV form.

Files::

    indiana_reports.csv       uid,MeSH,Problems,image,indication,comparison,findings,impression
    indiana_projections.csv   uid,filename,projection   (projection: Frontal / Lateral)
    images/images_normalized/<uid>_IM-<nnnn>-<k>001.dcm.png   8-bit PNGs

One row per report (``uid``, 1-based). ``MeSH``/``Problems`` are ``normal`` or semicolon-separated terms such as
``Pleural Effusion/right/small``, ``Cardiomegaly/mild``, ``Opacity/lung/base/left``, ``Fractures, Bone/ribs/left``
(Problems keeps only the term before the first ``/``). De-identification is ``XXXX``. There is no split
column (Open-I is a held-out set): the truth file lists every study as ``test``, with ``uid`` as study and patient id.
"""

from __future__ import annotations

from pathlib import Path

from cxr.data.synthetic.findings import Device, Severity, Zone
from cxr.data.synthetic.layouts.files import layout_rng, render_views, write_csv, write_png
from cxr.data.synthetic.truth import TruthRecord, TruthView
from cxr.labels import OBSERVATION_INDEX, LabelState
from cxr.records import Split

REPORTS_NAME = "indiana_reports.csv"
PROJECTIONS_NAME = "indiana_projections.csv"
REPORT_COLUMNS = ("uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")
IMAGE_DIR = "images/images_normalized"

_TERM = {"Pleural Effusion": "Pleural Effusion", "Cardiomegaly": "Cardiomegaly", "Pneumothorax": "Pneumothorax",
         "Lung Opacity": "Opacity", "Atelectasis": "Atelectasis", "Fracture": "Fractures, Bone",
         "Lung Lesion": "Nodule", "Edema": "Edema", "Consolidation": "Consolidation", "Pneumonia": "Pneumonia",
         "Enlarged Cardiomediastinum": "Mediastinum", "Pleural Other": "Pleural Thickening"}
_DEGREE = {Severity.SMALL: "mild", Severity.MODERATE: "moderate", Severity.LARGE: "severe"}


def _mesh_term(f) -> str:
    """One MeSH-style term: 'Pleural Effusion/right/small', 'Opacity/lung/base/left', 'Cardiomegaly/mild'."""
    term = _TERM[f.observation]
    parts = [term]
    side = f.laterality.value if f.laterality else None
    if f.observation in ("Lung Opacity", "Consolidation", "Lung Lesion", "Atelectasis"):
        zone = {Zone.LOWER: "base", Zone.MID: "middle lobe", Zone.UPPER: "upper lobe"}[f.zone or Zone.LOWER]
        parts += ["lung", zone] if f.observation != "Atelectasis" else [zone]
    if f.observation == "Fracture":
        parts.append("ribs")
    if side and f.observation != "Edema":
        parts.append(side)
    if f.severity and f.observation in ("Pleural Effusion", "Pneumothorax"):
        parts.append(f.severity.value)
    if f.severity and f.observation == "Cardiomegaly":
        parts.append(_DEGREE[f.severity])
    return "/".join(parts)


def mesh_and_problems(study) -> tuple[str, str]:
    """MeSH and Problems cells: ``normal`` for a normal study, positive findings and devices, else ``No Indexing``."""
    terms = [_mesh_term(f) for f in study.findings.values()
             if f.state is LabelState.POSITIVE and f.observation in _TERM]
    for d in study.devices:
        terms.append({Device.PACEMAKER: "Pacemaker, Artificial", Device.CENTRAL_LINE: "Catheters, Indwelling"}
                     .get(d.device, "Tube, Inserted"))
    # "normal" only where the report states a normal study (No Finding positive; devices may come with it):
    # a study whose findings are all hedged is not normal, so it gets "No Indexing" (a real Open-I value).
    if int(study.labels[OBSERVATION_INDEX["No Finding"]]) == LabelState.POSITIVE:
        terms.insert(0, "normal")
    terms = list(dict.fromkeys(terms))
    if not terms:
        return "No Indexing", "No Indexing"
    return ";".join(terms), ";".join(dict.fromkeys(t.split("/")[0] for t in terms))


def _deid(text: str | None) -> str | None:
    return None if text is None else text.replace("Dr. ___", "Dr. XXXX").replace("___", "XXXX")


def write_openi_layout(out_dir: Path, studies: list, image_size: int) -> list[TruthRecord]:
    """Write the Open-I CSVs and PNGs; returns the truth records."""
    reports, projections, truth = [], [], []
    for uid, study in enumerate(studies, 1):
        rng = layout_rng(study, 31)
        mesh, problems = mesh_and_problems(study)
        n_lat = sum(v.view.is_lateral for v in study.views)
        image_desc = ("Xray Chest PA and Lateral" if n_lat and len(study.views) > 1
                      else "XR CHEST 1V" if len(study.views) == 1 else "Chest, 2 views, frontal and lateral")
        indication = str(rng.choice(["XXXX-year-old male with chest pain.", "Shortness of breath.",
                                     "XXXX-year-old female, cough.", "Preop evaluation"]))
        comparison = "None." if study.study_order == 0 else "XXXX"
        findings, impression = _deid(study.findings_text), _deid(study.impression_text)
        reports.append([uid, mesh, problems, image_desc, indication, comparison, findings, impression])
        series = int(rng.integers(1, 9999))
        views = []
        for k, (view, img) in enumerate(zip(study.views, render_views(study, image_size), strict=False)):
            filename = f"{uid}_IM-{series:04d}-{(k + 1) * 1000 + 1:04d}.dcm.png"
            write_png(out_dir / IMAGE_DIR / filename, img, bits=8)
            projection = "Lateral" if view.view.is_lateral else "Frontal"
            projections.append([uid, filename, projection])
            views.append(TruthView(filename, "LATERAL" if view.view.is_lateral else "UNKNOWN",
                                   f"{IMAGE_DIR}/{filename}"))
        truth.append(TruthRecord(
            study_id=str(uid), patient_id=str(uid), split=Split.TEST.value, views=tuple(views),
            findings_text=findings, impression_text=impression, labels=tuple(int(v) for v in study.labels),
            layout="openi", world_study_id=study.study_id))
    write_csv(out_dir / REPORTS_NAME, REPORT_COLUMNS, reports)
    write_csv(out_dir / PROJECTIONS_NAME, PROJECTION_COLUMNS, projections)
    return truth



