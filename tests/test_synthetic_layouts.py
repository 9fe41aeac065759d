"""Layouts: documented files with exact headers, truth file, determinism, DICOM decoding to the phantom."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cxr.data.synthetic import load_synthetic_truth, write_synthetic_dataset
from cxr.data.synthetic.layouts.chexpert_plus import CHEXBERT_ORDER
from cxr.data.synthetic.layouts.chexpert_plus import COLUMNS as CHEXPERT_PLUS_COLUMNS
from cxr.data.synthetic.phantom import render_phantom, spec_for_study
from cxr.labels import CHEXPERT_OBSERVATIONS, OBSERVATION_INDEX

LABELS = ",".join(CHEXPERT_OBSERVATIONS)
MIMIC_HEADERS = {
    "mimic-cxr-2.0.0-metadata": "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,"
                                "Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,"
                                "ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning",
    "mimic-cxr-2.0.0-split": "dicom_id,study_id,subject_id,split",
    "mimic-cxr-2.0.0-chexpert": "subject_id,study_id," + LABELS,
    "mimic-cxr-2.0.0-negbio": "subject_id,study_id," + LABELS,
}
DICOM_HEADERS = {"cxr-record-list": "subject_id,study_id,dicom_id,path", "cxr-study-list": "subject_id,study_id,path"}
MIMIC_HEADER_RE = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)  # the official section parser's regex


def read_rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def header(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return fh.readline().rstrip("\n")


def norm(text: str | None) -> str:
    return " ".join((text or "").split())


def check_truth(root: Path, layout: str) -> list:
    truth = load_synthetic_truth(root)
    assert len(truth) == 40
    for rec in truth:
        assert rec.layout == layout and rec.split in ("train", "val", "test")
        assert len(rec.labels) == 14 and rec.impression_text or rec.findings_text
        for view in rec.views:
            assert (root / view.path).is_file(), view.path
    return truth


def test_csv_layout(synthetic_dataset):
    root = synthetic_dataset("csv")
    truth = check_truth(root, "csv")
    manifest = root / "manifest.csv"
    assert header(manifest) == "image_path,study_id,patient_id,split,view,findings,impression,report," + LABELS
    rows = read_rows(manifest)
    assert len(rows) == sum(len(t.views) for t in truth)
    by_study = {t.study_id: t for t in truth}
    for row in rows:
        assert (root / row["image_path"]).is_file() and row["image_path"].endswith(".png")
        rec = by_study[row["study_id"]]
        assert row["split"] == rec.split and row["view"] in ("PA", "AP", "LATERAL")
        assert norm(row["impression"]) == norm(rec.impression_text)
        for i, name in enumerate(CHEXPERT_OBSERVATIONS):
            assert row[name] == ("" if rec.labels[i] == -2 else str(rec.labels[i]))
    img = cv2.imread(str(root / rows[0]["image_path"]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    patients = {}
    for rec in truth:
        assert patients.setdefault(rec.patient_id, rec.split) == rec.split


@pytest.mark.parametrize("layout", ["mimic-cxr-jpg", "mimic-cxr-dicom"])
def test_mimic_layouts(synthetic_dataset, layout):
    root = synthetic_dataset(layout)
    truth = check_truth(root, layout)
    for stem, head in MIMIC_HEADERS.items():
        assert header(root / f"{stem}.csv.gz") == head
    split_rows = read_rows(root / "mimic-cxr-2.0.0-split.csv.gz")
    assert {r["split"] for r in split_rows} <= {"train", "validate", "test"}
    meta = read_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert all(re.fullmatch(r"\d{6}\.\d{3}", r["StudyTime"]) and r["StudyDate"].startswith("21") for r in meta)
    labels = {r["study_id"]: r for r in read_rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz")}
    ext = "jpg" if layout == "mimic-cxr-jpg" else "dcm"
    path_re = re.compile(rf"files/p1\d/p1\d{{7}}/s5\d{{7}}/[0-9a-f]{{8}}(-[0-9a-f]{{8}}){{4}}\.{ext}")
    for rec in truth:
        for view in rec.views:
            assert path_re.fullmatch(view.path), view.path
            assert view.path.split("/")[1] == "p" + rec.patient_id[:2]
        assert [labels[rec.study_id][n] for n in CHEXPERT_OBSERVATIONS] == [
            "" if v == -2 else f"{float(v):.1f}" for v in rec.labels]
        txt = (root / f"files/p{rec.patient_id[:2]}/p{rec.patient_id}/s{rec.study_id}.txt").read_text("ascii")
        assert "FINAL REPORT" in txt.splitlines()[0]
        assert all(line.startswith(" ") and len(line) <= 79 for line in txt.splitlines())
        names = [m.group(1) for m in MIMIC_HEADER_RE.finditer(txt)]
        assert ("IMPRESSION" in names or "CONCLUSION" in names) and ("FINDINGS" in names) == bool(rec.findings_text)
        body = re.split(r"\n (?:IMPRESSION|CONCLUSION):\s", txt)[1]
        body = re.split(r"\n [A-Z ()/,-]+:\s", body)[0]
        assert norm(body) == norm(rec.impression_text)
    if layout == "mimic-cxr-dicom":
        for stem, head in DICOM_HEADERS.items():
            assert header(root / f"{stem}.csv.gz") == head
        records = read_rows(root / "cxr-record-list.csv.gz")
        assert all((root / r["path"]).is_file() for r in records)
        assert all((root / r["path"]).is_file() for r in read_rows(root / "cxr-study-list.csv.gz"))
    else:
        img = cv2.imread(str(root / truth[0].views[0].path), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.ndim == 2


def test_mimic_plain_csv_option(tmp_path):
    write_synthetic_dataset(tmp_path, "mimic-cxr-jpg", 5, image_size=32, gzip=False)
    assert header(tmp_path / "mimic-cxr-2.0.0-split.csv") == MIMIC_HEADERS["mimic-cxr-2.0.0-split"]
    assert not list(tmp_path.glob("*.gz"))
    with pytest.raises(ValueError):
        write_synthetic_dataset(tmp_path / "x", "csv", 5, image_size=32, gzip=False)


def decode(path: Path) -> np.ndarray:
    """datasets.md §4.2 order: stored -> modality LUT -> VOI -> invert MONOCHROME1 -> min-max."""
    ds = pydicom.dcmread(path)
    arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr
    return (arr - arr.min()) / (arr.max() - arr.min())


def test_dicom_decodes_to_phantom(tmp_path):
    studies = write_synthetic_dataset(tmp_path, "mimic-cxr-dicom", 30, seed=2, image_size=32)
    seen = set()
    for study in studies:
        for i, view in enumerate(study.views):
            path = tmp_path / f"files/p{study.patient_id[:2]}/p{study.patient_id}/s{study.study_id}/{view.image_id}.dcm"
            ds = pydicom.dcmread(path)
            assert ds.ViewPosition in ("PA", "AP", "LATERAL", "LL") and ds.Modality in ("CR", "DX")
            seen.add((ds.PhotometricInterpretation, int(ds.BitsStored), ds.file_meta.TransferSyntaxUID.name,
                      "RescaleSlope" in ds))
            phantom = render_phantom(spec_for_study(study, i), 32).astype(np.float64)
            expected = (phantom - phantom.min()) / (phantom.max() - phantom.min())
            assert np.abs(decode(path) - expected).max() < 0.01, path.name
    kinds = {s[0] for s in seen}, {s[1] for s in seen}, {s[2] for s in seen}, {s[3] for s in seen}
    assert kinds[0] == {"MONOCHROME1", "MONOCHROME2"} and kinds[1] == {12, 16} and kinds[3] == {True, False}
    assert kinds[2] == {"Explicit VR Little Endian", "RLE Lossless", "JPEG 2000 Image Compression (Lossless Only)"}


def test_chexpert_plus_layout(synthetic_dataset):
    root = synthetic_dataset("chexpert-plus")
    truth = check_truth(root, "chexpert-plus")
    assert len(CHEXPERT_PLUS_COLUMNS) == 27
    assert header(root / "df_chexpert_plus_240401.csv") == ",".join(CHEXPERT_PLUS_COLUMNS)
    rows = read_rows(root / "df_chexpert_plus_240401.csv")
    depths = set()
    for row in rows:
        assert re.fullmatch(r"(train|valid)/patient\d{5}/study\d+/view\d+_(frontal|lateral)\.jpg", row["path_to_image"])
        png = root / "PNG" / row["path_to_image"].replace(".jpg", ".png")
        depths.add(cv2.imread(str(png), cv2.IMREAD_UNCHANGED).dtype)
        assert row["split"] in ("train", "valid") and row["frontal_lateral"] in ("Frontal", "Lateral")
        assert row["report"].endswith("associated with the patient.")
        assert row["section_findings"] or row["section_impression"]
    assert depths == {np.dtype(np.uint8), np.dtype(np.uint16)}
    by_key = {t.study_id: t for t in truth}
    for name in ("report_fixed", "findings_fixed", "impression_fixed"):
        lines = (root / "chexbert_labels" / f"{name}.json").read_text().splitlines()
        assert len(lines) == len(rows)
        obj = json.loads(lines[0])
        assert list(obj) == ["path_to_image", *CHEXBERT_ORDER]
    for line in (root / "chexbert_labels" / "report_fixed.json").read_text().splitlines():
        obj = json.loads(line)
        rec = by_key[re.search(r"patient\d+/study\d+", obj["path_to_image"]).group(0)]
        for o in CHEXBERT_ORDER:
            v = rec.labels[OBSERVATION_INDEX[o]]
            assert obj[o] == (None if v == -2 else float(v))


def test_openi_layout(synthetic_dataset):
    root = synthetic_dataset("openi")
    truth = check_truth(root, "openi")
    assert header(root / "indiana_reports.csv") == "uid,MeSH,Problems,image,indication,comparison,findings,impression"
    assert header(root / "indiana_projections.csv") == "uid,filename,projection"
    reports = read_rows(root / "indiana_reports.csv")
    projections = read_rows(root / "indiana_projections.csv")
    assert len(reports) == len(truth)
    for p in projections:
        assert re.fullmatch(rf"{p['uid']}_IM-\d{{4}}-\d{{4}}\.dcm\.png", p["filename"])
        assert p["projection"] in ("Frontal", "Lateral")
        assert (root / "images/images_normalized" / p["filename"]).is_file()
    for r, rec in zip(reports, truth, strict=False):
        positives = [n for n in CHEXPERT_OBSERVATIONS if rec.labels[OBSERVATION_INDEX[n]] == 1 and n != "No Finding"]
        # "normal" = a normal report (No Finding positive) with no device; hedged-only studies are "No Indexing".
        normal = rec.labels[OBSERVATION_INDEX["No Finding"]] == 1 and not positives
        assert (r["Problems"] == "normal") == normal, (r["Problems"], positives)
        assert "___" not in r["findings"] + r["impression"]
    assert any("/" in r["MeSH"] for r in reports)


@pytest.mark.parametrize("layout", ["csv", "mimic-cxr-dicom", "chexpert-plus"])
def test_same_seed_identical_bytes(tmp_path, layout):
    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    write_synthetic_dataset(tmp_path / "a", layout, 8, seed=3, image_size=32)
    write_synthetic_dataset(tmp_path / "b", layout, 8, seed=3, image_size=32)
    write_synthetic_dataset(tmp_path / "c", layout, 8, seed=4, image_size=32)
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert a == b
    assert (tmp_path / "a/synthetic_truth.jsonl").read_bytes() != (tmp_path / "c/synthetic_truth.jsonl").read_bytes()
