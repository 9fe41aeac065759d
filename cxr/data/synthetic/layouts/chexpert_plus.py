"""Layout ``chexpert-plus``: the CheXpert-Plus release (datasets.md §2).

Files::

    df_chexpert_plus_240401.csv                    the 27 columns, one row per image
    PNG/{train,valid}/patientNNNNN/studyN/viewK_{frontal,lateral}.png   8-bit (some 16-bit) PNGs
    chexbert_labels/{report,findings,impression}_fixed.json   JSON Lines: path_to_image + 14 labels

``path_to_image`` keeps the old CheXpert ``.jpg`` name (``train/patient00001/study1/view1_frontal.jpg``) while
the file is ``PNG/<same path>.png``. ``split`` is ``train``/``valid`` (no test split: world val and test patients
are written as ``valid``). Reports are CheXpert-Plus style: ALL CAPS sometimes, numbered impressions, the
``report`` column ends with the anonymisation sentence, and impression-only reports put their body in
``section_findings`` (the Stanford template quirk of §2.6) with ``section_impression`` empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr.data.synthetic.findings import Section
from cxr.data.synthetic.layouts.files import label_json, layout_rng, render_views, write_csv, write_png
from cxr.data.synthetic.layouts.mimic_common import study_datetime
from cxr.data.synthetic.reports import labels_from_mentions, section_labels
from cxr.data.synthetic.truth import TruthRecord, TruthView
from cxr.labels import OBSERVATION_INDEX
from cxr.records import Split, ViewPosition

CSV_NAME = "df_chexpert_plus_240401.csv"
COLUMNS: tuple[str, ...] = (
    "path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id", "patient_report_date_order",
    "report", "section_narrative", "section_clinical_history", "section_history", "section_comparison",
    "section_technique", "section_procedure_comments", "section_findings", "section_impression",
    "section_end_of_impression", "section_summary", "section_accession_number", "age", "sex", "race",
    "ethnicity", "interpreter_needed", "insurance_type", "recent_bmi", "deceased", "split",
)
#: Label key order of the CheXbert JSONL files (§2.4).
CHEXBERT_ORDER: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices", "No Finding",
)
ANONYMISATION = ("This report has been anonymized. All dates are offset from the actual dates by a fixed interval "
                 "associated with the patient.")


def _demographics(patient_index: int, seed: int) -> list[object]:
    rng = np.random.default_rng([seed, patient_index, 77])
    pick = lambda opts: opts[int(rng.integers(len(opts)))]  # noqa: E731
    return [float(int(rng.integers(18, 95))), pick(["Female", "Male", "Male", "Female", "Unknown"]),
            pick(["White", "White", "Black", "Asian", "Other", "Unknown", "Patient Refused"]),
            pick(["Non-Hispanic/Non-Latino", "Non-Hispanic/Non-Latino", "Hispanic/Latino", "Unknown",
                  "Patient Refused"]),
            pick(["No", "No", "No", "Yes"]), pick(["Private Insurance", "Medicare", "Medicaid", "Unknown"]),
            round(float(rng.uniform(17, 38)), 1), pick(["No", "No", "No", "Yes"])]


def _sections(study, rng: np.random.Generator) -> tuple[str | None, str | None, bool]:
    """(section_findings, section_impression, upper) as written; impression-only bodies go to findings."""
    upper = rng.random() < 0.3
    imp_sentences = [m.sentence for m in study.mentions if m.section is Section.IMPRESSION]
    if len(imp_sentences) > 1 and rng.random() < 0.4:
        impression = "\n".join(f"{i}. {s}" for i, s in enumerate(imp_sentences, 1))
    else:
        impression = study.impression_text
    findings = study.findings_text
    if study.findings_text is None:  # (legacy: every style but STRUCTURED; realistic: impression-only styles)
        findings, impression = impression, None  # Stanford template: body under IMPRESSION parsed as findings
    if upper:
        findings = findings.upper() if findings else findings
        impression = impression.upper() if impression else impression
    return findings, impression, upper


@dataclass(frozen=True)
class _ReportParts:
    """The CheXpert-Plus report columns of one study and the assembled ``report`` text."""

    narrative: str
    history: str
    comparison: str
    summary: str
    accession: str
    end_of_impression: str
    report: str


def _report_parts(study, rng: np.random.Generator, findings: str | None, impression: str | None,
                  upper: bool) -> _ReportParts:
    """The Stanford report template filled for ``study`` (draws the history and the accession number)."""
    date, _ = study_datetime(study)
    n_views = len(study.views)
    views = f"{n_views} View{'s' if n_views > 1 else ''}"
    narrative = f"Chest {views}, {int(date[4:6])}-{int(date[6:])}-{date[:4]}"
    history = "Shortness of breath." if rng.random() < 0.5 else "Evaluate for pneumonia."
    comparison = "None." if study.study_order == 0 else f"{int(date[4:6])}-1-{date[:4]}."
    summary = "1-NORMAL" if study.labels[OBSERVATION_INDEX["No Finding"]] == 1 else "2-ABNORMAL"
    accession = str(int(rng.integers(1_000_000, 9_999_999)))
    parts = [f"NARRATIVE:\n{narrative}", f"CLINICAL HISTORY: {history}", f"COMPARISON: {comparison}"]
    if study.findings_text is not None:
        parts.append(f"FINDINGS:\n{findings}")
        if impression is not None:
            parts.append(f"IMPRESSION:\n{impression}")
    else:
        parts.append(f"IMPRESSION:\n{findings}")
    end_of_impression = f"SUMMARY: {summary}\nI have personally reviewed the images for this examination."
    parts.append(end_of_impression)
    parts.append(f"ACCESSION NUMBER:\n{accession}\n{ANONYMISATION}")
    report = "\n\n".join(parts)
    if upper:
        report = report.replace(ANONYMISATION, "\0").upper().replace("\0", ANONYMISATION)
    return _ReportParts(narrative, history, comparison, summary, accession, end_of_impression, report)


def _section_label_sets(study, findings: str | None, impression: str | None):
    """CheXbert labels of the findings and impression columns (an impression-only body is the findings)."""
    if findings is not None and impression is None and study.findings_text is None:
        return section_labels(study.mentions, Section.IMPRESSION), labels_from_mentions([])
    return (section_labels(study.mentions, Section.FINDINGS),
            section_labels(study.mentions, Section.IMPRESSION))


def write_chexpert_plus_layout(out_dir: Path, studies: list, image_size: int, seed: int = 0,
                               png16_fraction: float = 0.2) -> list[TruthRecord]:
    """Write the CheXpert-Plus CSV, PNG tree and CheXbert label files; returns the truth records."""
    patient_numbers = {pid: n + 1 for n, pid in enumerate(dict.fromkeys(s.patient_id for s in studies))}
    rows, truth = [], []
    jsonl: dict[str, list[str]] = {"report_fixed": [], "findings_fixed": [], "impression_fixed": []}
    for study in studies:
        rng = layout_rng(study, 21)
        folder = "train" if study.split is Split.TRAIN else "valid"
        patient = f"patient{patient_numbers[study.patient_id]:05d}"
        study_key = f"{patient}/study{study.study_order + 1}"
        findings, impression, upper = _sections(study, rng)
        p = _report_parts(study, rng, findings, impression, upper)
        find_labels, imp_labels = _section_label_sets(study, findings, impression)
        demo = _demographics(study.patient_index, seed)
        views = []
        for k, (view, img) in enumerate(zip(study.views, render_views(study, image_size), strict=False)):
            kind = "lateral" if view.view.is_lateral else "frontal"
            stem = f"{folder}/{study_key}/view{k + 1}_{kind}"
            rel_png = f"PNG/{stem}.png"
            write_png(out_dir / rel_png, img, bits=16 if rng.random() < png16_fraction else 8)
            ap_pa = view.view.value if view.view.is_frontal else None
            rows.append([f"{stem}.jpg", f"{stem}.dcm", "Lateral" if view.view.is_lateral else "Frontal", ap_pa,
                         patient, study.study_order + 1, p.report, p.narrative, p.history, None, p.comparison,
                         None, None, findings, impression, p.end_of_impression, p.summary, p.accession, *demo,
                         folder])
            views.append(TruthView(f"{study_key}/view{k + 1}_{kind}",
                                   view.view.value if view.view.is_frontal else ViewPosition.LATERAL.value, rel_png))
            for name, labels in (("report_fixed", study.labels), ("findings_fixed", find_labels),
                                 ("impression_fixed", imp_labels)):
                obj = {"path_to_image": f"{stem}.jpg"}
                obj.update({o: label_json(int(labels[OBSERVATION_INDEX[o]])) for o in CHEXBERT_ORDER})
                jsonl[name].append(json.dumps(obj))
        truth.append(TruthRecord(
            study_id=study_key, patient_id=patient, split=Split.TRAIN.value if folder == "train" else Split.VAL.value,
            views=tuple(views), findings_text=findings, impression_text=impression,
            labels=tuple(int(v) for v in study.labels), layout="chexpert-plus", world_study_id=study.study_id))
    write_csv(out_dir / CSV_NAME, COLUMNS, rows)
    (out_dir / "chexbert_labels").mkdir(parents=True, exist_ok=True)
    for name, lines in jsonl.items():
        (out_dir / "chexbert_labels" / f"{name}.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return truth
