"""Tiny hand-written dataset trees in the real on-disk formats (datasets.md), for source and bad-input tests.

Each writer takes plain specs so a test can plant exactly one defect. Images are small random PNG/JPG files.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.labels import CHEXPERT_OBSERVATIONS


def write_image(path: Path, seed: int = 0, size: int = 24) -> Path:
    """A random grey image (PNG or JPG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]], sep: str = ",", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=sep)
        writer.writerow(header)
        writer.writerows(rows)
    return path


MIMIC_REPORT = (" FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ with cough\n \n"
                " FINDINGS:\n \n Heart size is normal.  No pleural effusion {n}.\n \n IMPRESSION:\n \n"
                " No acute process {n}.\n")


@dataclass
class MimicStudy:
    subject: str
    study: str
    dicoms: list[tuple[str, str]]  # (dicom_id, ViewPosition)
    split: str = "train"
    labels: dict[str, str] | None = field(default_factory=lambda: {"Edema": "1.0", "Cardiomegaly": "-1.0"})
    report: str | None = None  # None: the default report; "" writes an empty file
    write_report: bool = True
    write_images: bool = True


def default_mimic_studies() -> list[MimicStudy]:
    return [
        MimicStudy("10000032", "50000001", [("aa-01", "PA"), ("aa-02", "LATERAL")]),
        MimicStudy("10000032", "50000002", [("aa-03", "AP")]),
        MimicStudy("10000045", "50000003", [("bb-01", "PA")], labels=None),  # no label row: keeps NOT_MENTIONED
        MimicStudy("11000050", "50000004", [("cc-01", "")], split="validate"),
        MimicStudy("12000060", "50000005", [("dd-01", "PA"), ("dd-02", "AP")], split="test"),
        MimicStudy("12000070", "50000006", [("ee-01", "LATERAL")], split="test"),  # lateral only
    ]


def write_mimic(root: Path, studies: list[MimicStudy] | None = None, ext: str = "jpg", gz: bool = True,
                report_text: str = MIMIC_REPORT) -> Path:
    """``files/`` tree with images and reports, plus split/metadata/chexpert/negbio tables (``.csv.gz``)."""
    studies = default_mimic_studies() if studies is None else studies
    suffix = ".csv.gz" if gz else ".csv"
    split_rows, meta_rows, label_rows = [], [], []
    for n, st in enumerate(studies):
        folder = root / "files" / f"p{st.subject[:2]}" / f"p{st.subject}"
        for j, (dicom_id, view) in enumerate(st.dicoms):
            split_rows.append([dicom_id, st.study, st.subject, st.split])
            meta_rows.append([dicom_id, st.subject, st.study, "CHEST (PA AND LAT)", view, 24, 24, "21800506",
                              "012345.000", "", "", ""])
            if st.write_images:
                write_image(folder / f"s{st.study}" / f"{dicom_id}.{ext}", seed=n * 10 + j)
        if st.write_report:
            folder.mkdir(parents=True, exist_ok=True)
            text = report_text.format(n=n) if st.report is None else st.report
            (folder / f"s{st.study}.txt").write_text(text)
        if st.labels is not None:
            label_rows.append([st.subject, st.study] + [st.labels.get(o, "") for o in CHEXPERT_OBSERVATIONS])
    write_csv(root / f"mimic-cxr-2.0.0-split{suffix}", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    write_csv(root / f"mimic-cxr-2.0.0-metadata{suffix}",
              ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
               "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
               "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"], meta_rows)
    for kind in ("chexpert", "negbio"):
        rows = [r[:2] + (["1.0" if v == "-1.0" else v for v in r[2:]] if kind == "negbio" else r[2:])
                for r in label_rows]
        write_csv(root / f"mimic-cxr-2.0.0-{kind}{suffix}", ["subject_id", "study_id", *CHEXPERT_OBSERVATIONS], rows)
    return root


CHEXPERT_PLUS_COLUMNS = [
    "path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id", "patient_report_date_order",
    "report", "section_narrative", "section_clinical_history", "section_history", "section_comparison",
    "section_technique", "section_procedure_comments", "section_findings", "section_impression",
    "section_end_of_impression", "section_summary", "section_accession_number", "age", "sex", "race", "ethnicity",
    "interpreter_needed", "insurance_type", "recent_bmi", "deceased", "split"]


def chexpert_plus_row(path: str, findings: str = "", impression: str = "", split: str = "train",
                      frontal: str = "Frontal", ap_pa: str = "PA", report: str | None = None) -> dict:
    patient = path.split("/")[1]
    return {"path_to_image": path, "path_to_dcm": path.replace(".jpg", ".dcm"), "frontal_lateral": frontal,
            "ap_pa": ap_pa, "deid_patient_id": patient, "patient_report_date_order": "1",
            "report": report if report is not None else
            f"IMPRESSION:\n{findings}\n\nThis report has been anonymized. All dates are offset.",
            "section_findings": findings, "section_impression": impression,
            "section_end_of_impression": "2-ABNORMAL. I have personally reviewed the images.", "split": split}


def default_chexpert_plus_rows() -> list[dict]:
    return [
        chexpert_plus_row("train/patient00001/study1/view1_frontal.jpg", "1. SMALL EFFUSION.", "NO PNEUMOTHORAX."),
        chexpert_plus_row("train/patient00001/study1/view2_lateral.jpg", "1. SMALL EFFUSION.", "NO PNEUMOTHORAX.",
                          frontal="Lateral", ap_pa=""),
        chexpert_plus_row("train/patient00002/study1/view1_frontal.jpg", "", "CARDIOMEGALY.", ap_pa="AP"),
        chexpert_plus_row("train/patient00002/study1/view1_frontal.jpg", "", "CARDIOMEGALY.", ap_pa="AP"),  # dup
        chexpert_plus_row("valid/patient64541/study1/view1_frontal.jpg", "LINES AND TUBES.", "", split="valid"),
    ]


def write_chexpert_plus(root: Path, rows: list[dict] | None = None, image_dir: str = "PNG", ext: str = ".png",
                        labels: dict[str, dict] | None = None, write_images: bool = True) -> Path:
    rows = default_chexpert_plus_rows() if rows is None else rows
    write_csv(root / "df_chexpert_plus_240401.csv", CHEXPERT_PLUS_COLUMNS,
              [[r.get(c, "") for c in CHEXPERT_PLUS_COLUMNS] for r in rows])
    if write_images:
        for n, r in enumerate(rows):
            write_image((root / image_dir / r["path_to_image"]).with_suffix(ext), seed=n)
    labels = labels if labels is not None else {
        rows[0]["path_to_image"]: {"Pleural Effusion": 1.0, "Pneumothorax": 0.0},
        rows[2]["path_to_image"]: {"Cardiomegaly": 1.0, "Edema": -1.0}}
    (root / "chexbert_labels").mkdir(parents=True, exist_ok=True)
    with open(root / "chexbert_labels" / "report_fixed.json", "w") as fh:
        for path, lab in labels.items():
            obj = {"path_to_image": path, **{o: lab.get(o) for o in CHEXPERT_OBSERVATIONS}}
            fh.write(json.dumps(obj) + "\n")
    return root


OPENI_REPORT_COLUMNS = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]


def write_openi(root: Path, reports: list[list[str]] | None = None, projections: list[list[str]] | None = None,
                write_images: bool = True) -> Path:
    reports = reports if reports is not None else [
        ["1", "normal", "normal", "Xray Chest PA and Lateral", "Positive TB test", "None.",
         "The cardiac silhouette and mediastinum size are within normal limits.", "Normal chest x-XXXX."],
        ["2", "Cardiomegaly/borderline;Pulmonary Artery/enlarged", "Cardiomegaly;Pulmonary Artery",
         "Chest, 2 views", "XXXX", "", "Borderline cardiomegaly.", "No acute pulmonary findings."],
        ["3", "Opacity/lung/base/left;Pleural Effusion/left", "Opacity;Pleural Effusion", "", "", "", "",
         "Left basilar opacity and small effusion."],
    ]
    projections = projections if projections is not None else [
        ["1", "1_IM-0001-4001.dcm.png", "Frontal"], ["1", "1_IM-0001-3001.dcm.png", "Lateral"],
        ["2", "2_IM-0652-1001.dcm.png", "Frontal"], ["3", "3_IM-1384-2001.dcm.png", "Frontal"]]
    write_csv(root / "indiana_reports.csv", OPENI_REPORT_COLUMNS, reports)
    write_csv(root / "indiana_projections.csv", ["uid", "filename", "projection"], projections)
    (root / "images" / "images_normalized").mkdir(parents=True, exist_ok=True)
    if write_images:
        for n, (_, filename, _) in enumerate(projections):
            write_image(root / "images" / "images_normalized" / filename, seed=n)
    return root


def write_manifest(root: Path, rows: list[dict] | None = None, sep: str = ",", name: str = "manifest.csv",
                   bom: bool = False, write_images: bool = True) -> Path:
    """A manifest CSV plus its images (paths relative to the CSV)."""
    rows = rows if rows is not None else [
        {"study_id": f"s{i}", "patient_id": f"p{i // 2}", "image_path": f"img/{i}.png",
         "report": f"Finding number {i}. Second sentence {i}.", "view": "PA"} for i in range(12)]
    header = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(root / name, header, [[r.get(c, "") for c in header] for r in rows], sep=sep, bom=bom)
    if write_images:
        for n, r in enumerate(rows):
            for p in str(r.get("image_path", "")).replace("|", ";").split(";"):
                if p and not p.startswith("/") and not p.startswith("["):
                    write_image(root / p, seed=n)
    return root / name
