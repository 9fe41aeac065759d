"""Each source turns a tiny tree in the real on-disk format into the expected StudyRecords."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from _data_writers import (
    MimicStudy,
    chexpert_plus_row,
    default_chexpert_plus_rows,
    write_chexpert_plus,
    write_csv,
    write_image,
    write_manifest,
    write_mimic,
    write_openi,
)

from cxr.data.sources import ChexpertPlusSource, CsvManifestSource, MimicCxrSource, OpenISource
from cxr.data.sources.csv_manifest import patient_split, split_list_cell
from cxr.data.validation import ProblemLog
from cxr.labels import OBSERVATION_INDEX, LabelState
from cxr.records import Split, ViewPosition
from cxr.reports.compose import compose_report_text


def load(source) -> tuple[dict, ProblemLog]:
    problems = ProblemLog()
    source.check(problems)
    records = source.load(problems)
    return {r.study_id: r for r in records}, problems


# -- MIMIC ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_mimic_jpg(tmp_path: Path, gz: bool) -> None:
    write_mimic(tmp_path, gz=gz)
    recs, problems = load(MimicCxrSource(str(tmp_path)))
    assert not problems.problems, problems.problems
    assert len(recs) == 6
    r = recs["50000001"]
    assert r.patient_id == "10000032" and r.split is Split.TRAIN and r.key == "mimic:50000001"
    assert [im.view for im in r.images] == [ViewPosition.PA, ViewPosition.LATERAL]
    assert r.images[0].path == str(tmp_path / "files/p10/p10000032/s50000001/aa-01.jpg")
    assert r.labels[OBSERVATION_INDEX["Edema"]] == LabelState.POSITIVE
    assert r.labels[OBSERVATION_INDEX["Cardiomegaly"]] == LabelState.UNCERTAIN
    assert r.labels[OBSERVATION_INDEX["Atelectasis"]] == LabelState.NOT_MENTIONED
    assert compose_report_text(r.report) == "[FINDINGS] Heart size is normal. No pleural effusion 0. " \
                                            "[IMPRESSION] No acute process 0."
    # a study without a label row is kept, all NOT_MENTIONED (no inner join)
    assert (recs["50000003"].labels == LabelState.NOT_MENTIONED).all()
    assert recs["50000004"].split is Split.VAL and recs["50000004"].images[0].view is ViewPosition.UNKNOWN
    assert recs["50000005"].split is Split.TEST


def test_mimic_negbio_and_files_root(tmp_path: Path) -> None:
    write_mimic(tmp_path)
    recs, _ = load(MimicCxrSource(str(tmp_path / "files"), labels="negbio"))
    assert recs["50000001"].labels[OBSERVATION_INDEX["Cardiomegaly"]] == LabelState.POSITIVE


def test_mimic_dicom_release_with_reports_zip(tmp_path: Path) -> None:
    jpg = write_mimic(tmp_path / "jpg", [MimicStudy("10000032", "50000001", [("aa-01", "PA")])])
    dcm_root = tmp_path / "dcm"
    write_image(dcm_root / "files/p10/p10000032/s50000001/aa-01.png")  # existence is not checked here
    with zipfile.ZipFile(tmp_path / "mimic-cxr-reports.zip", "w") as zf:
        zf.writestr("files/p10/p10000032/s50000001.txt", "\n IMPRESSION:  Clear lungs.\n")
    src = MimicCxrSource(str(dcm_root), tables_dir=str(jpg), reports_zip=str(tmp_path / "mimic-cxr-reports.zip"),
                         image_format="dcm")
    recs, problems = load(src)
    assert not problems.problems
    assert recs["50000001"].images[0].path.endswith("files/p10/p10000032/s50000001/aa-01.dcm")
    assert recs["50000001"].report.impression == "Clear lungs."


def test_mimic_test_set_labels_with_airspace_opacity(tmp_path: Path) -> None:
    write_mimic(tmp_path)
    from cxr.labels import CHEXPERT_OBSERVATIONS
    header = ["study_id"] + [("Airspace Opacity" if o == "Lung Opacity" else o) for o in CHEXPERT_OBSERVATIONS]
    row = ["50000005"] + ["1.0" if o == "Lung Opacity" else "" for o in CHEXPERT_OBSERVATIONS]
    write_csv(tmp_path / "mimic-cxr-2.1.0-test-set-labeled.csv", header, [row])
    recs, problems = load(MimicCxrSource(str(tmp_path), label_file=str(tmp_path / "mimic-cxr-2.1.0-test-set-labeled.csv")))
    assert not problems.problems
    assert recs["50000005"].labels[OBSERVATION_INDEX["Lung Opacity"]] == LabelState.POSITIVE


# -- CheXpert-Plus -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_dir,ext", [("PNG", ".png"), ("PNG/PNG", ".png"), ("CheXpert-v1.0-small", ".jpg")])
def test_chexpert_plus(tmp_path: Path, image_dir: str, ext: str) -> None:
    write_chexpert_plus(tmp_path, image_dir=image_dir, ext=ext)
    recs, problems = load(ChexpertPlusSource(str(tmp_path)))
    assert not problems.problems, problems.problems
    assert set(recs) == {"patient00001/study1", "patient00002/study1", "patient64541/study1"}
    r = recs["patient00001/study1"]
    assert [im.view for im in r.images] == [ViewPosition.PA, ViewPosition.LATERAL]
    assert Path(r.images[0].path) == (tmp_path / image_dir / "train/patient00001/study1/view1_frontal").with_suffix(ext)
    assert r.labels[OBSERVATION_INDEX["Pleural Effusion"]] == LabelState.POSITIVE
    text = compose_report_text(r.report)
    assert text == "[FINDINGS] 1. SMALL EFFUSION. [IMPRESSION] NO PNEUMOTHORAX."
    assert "personally reviewed" not in text  # end_of_impression boilerplate excluded
    assert len(recs["patient00002/study1"].images) == 1  # duplicated path_to_image de-duplicated
    assert compose_report_text(recs["patient00002/study1"].report) == "[IMPRESSION] CARDIOMEGALY."
    assert recs["patient64541/study1"].split is Split.VAL
    assert recs["patient00002/study1"].labels[OBSERVATION_INDEX["Edema"]] == LabelState.UNCERTAIN


@pytest.mark.parametrize("dicom_dir", ["DICOM", "DICOM/DICOM"])
def test_chexpert_plus_dicom_release_resolves_path_to_dcm(tmp_path: Path, dicom_dir: str) -> None:
    from cxr.data.dicom import write_dicom
    from cxr.data.images import load_image

    rows = default_chexpert_plus_rows()
    write_chexpert_plus(tmp_path, rows, write_images=False)
    for n, row in enumerate(rows):
        path = tmp_path / dicom_dir / row["path_to_dcm"]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dicom(path, (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 16 + n) % 4096, bits_stored=12)
    recs, problems = load(ChexpertPlusSource(str(tmp_path), image_format="dcm"))
    assert not problems.problems, problems.problems
    r = recs["patient00001/study1"]
    assert [Path(im.path) for im in r.images] == [
        tmp_path / dicom_dir / "train/patient00001/study1/view1_frontal.dcm",
        tmp_path / dicom_dir / "train/patient00001/study1/view2_lateral.dcm"]
    assert [im.view for im in r.images] == [ViewPosition.PA, ViewPosition.LATERAL]
    # labels are still joined on path_to_image (the .jpg name), not on the DICOM path
    assert r.labels[OBSERVATION_INDEX["Pleural Effusion"]] == LabelState.POSITIVE
    assert load_image(r.images[0].path).shape == (16, 16)


def test_chexpert_plus_report_fallback_strips_anonymisation(tmp_path: Path) -> None:
    rows = [chexpert_plus_row("train/patient00009/study2/view1_frontal.jpg",
                              report="NARRATIVE: Lungs clear.\nThis report has been anonymized. All dates offset.")]
    write_chexpert_plus(tmp_path, rows, labels={})
    recs, _ = load(ChexpertPlusSource(str(tmp_path)))
    assert compose_report_text(recs["patient00009/study2"].report) == "NARRATIVE: Lungs clear."


# -- Open-I --------------------------------------------------------------------------------------------------
def test_openi(tmp_path: Path) -> None:
    write_openi(tmp_path)
    recs, problems = load(OpenISource(str(tmp_path)))
    assert not problems.problems, problems.problems
    assert {r.split for r in recs.values()} == {Split.TEST}
    assert [im.view for im in recs["1"].images] == [ViewPosition.UNKNOWN, ViewPosition.LATERAL]
    assert recs["1"].labels[OBSERVATION_INDEX["No Finding"]] == LabelState.POSITIVE
    assert recs["2"].labels[OBSERVATION_INDEX["Cardiomegaly"]] == LabelState.POSITIVE
    assert (recs["2"].labels == LabelState.POSITIVE).sum() == 1  # "Pulmonary Artery" has no mapping
    lab3 = recs["3"].labels
    assert lab3[OBSERVATION_INDEX["Lung Opacity"]] == lab3[OBSERVATION_INDEX["Pleural Effusion"]] == LabelState.POSITIVE
    assert compose_report_text(recs["3"].report) == "[IMPRESSION] Left basilar opacity and small effusion."
    recs_val, _ = load(OpenISource(str(tmp_path), split="val"))
    assert {r.split for r in recs_val.values()} == {Split.VAL}


# -- CSV manifest --------------------------------------------------------------------------------------------
def test_split_list_cell() -> None:
    assert split_list_cell("a.png") == ["a.png"]
    assert split_list_cell("a.png; b.png") == ["a.png", "b.png"]
    assert split_list_cell("a.png|b.png") == ["a.png", "b.png"]
    assert split_list_cell('["a.png", "b.png"]') == ["a.png", "b.png"]
    assert split_list_cell("['a.png','b.png']") == ["a.png", "b.png"]


@pytest.mark.parametrize("sep", [",", "\t", ";"])
def test_manifest_sniffs_separator_and_bom(tmp_path: Path, sep: str) -> None:
    csv_path = write_manifest(tmp_path, sep=sep, bom=True)
    recs, problems = load(CsvManifestSource("m", str(csv_path)))
    assert not problems.problems
    assert len(recs) == 12 and recs["s3"].patient_id == "p1"
    assert recs["s3"].images[0].path == str(tmp_path / "img/3.png")


def test_manifest_gzipped_tsv(tmp_path: Path) -> None:
    import gzip
    import shutil

    plain = write_manifest(tmp_path, sep="\t", bom=True)
    with open(plain, "rb") as src, gzip.open(tmp_path / "m.tsv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()
    recs, problems = load(CsvManifestSource("m", str(tmp_path / "m.tsv.gz")))
    assert not problems.problems
    assert len(recs) == 12 and recs["s3"].patient_id == "p1"
    assert recs["s3"].images[0].path == str(tmp_path / "img/3.png")  # relative to the manifest's folder


def test_manifest_patient_level_split_is_seeded(tmp_path: Path) -> None:
    rows = [{"image_path": f"img/{i}.png", "report": f"text {i}", "patient_id": f"p{i % 25}"} for i in range(200)]
    csv_path = write_manifest(tmp_path, rows, write_images=False)
    recs, _ = load(CsvManifestSource("m", str(csv_path), split_fractions=(0.6, 0.2, 0.2), split_seed=3))
    by_patient: dict[str, set] = {}
    for r in recs.values():
        by_patient.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())  # no patient in two splits
    assert {s for v in by_patient.values() for s in v} == set(Split)
    again, _ = load(CsvManifestSource("m", str(csv_path), split_fractions=(0.6, 0.2, 0.2), split_seed=3))
    assert {k: r.split for k, r in recs.items()} == {k: r.split for k, r in again.items()}
    other = [patient_split(f"p{i}", (0.6, 0.2, 0.2), seed=4) for i in range(25)]
    assert other != [patient_split(f"p{i}", (0.6, 0.2, 0.2), seed=3) for i in range(25)]


def test_manifest_multi_image_studies_and_columns(tmp_path: Path) -> None:
    rows = [
        {"StudyID": "A", "img": "img/a1.png|img/a2.png", "Findings": "Lungs clear.", "Impression": "Normal.",
         "Edema": "0", "ViewPosition": "PA|LATERAL", "split": "valid", "subject_id": "1"},
        {"StudyID": "B", "img": "img/b1.png", "Findings": "", "Impression": "Effusion.", "Edema": "1.0",
         "ViewPosition": "AP", "split": "train", "subject_id": "2"},
        {"StudyID": "B", "img": "img/b2.png", "Findings": "", "Impression": "Effusion.", "Edema": "1.0",
         "ViewPosition": "LL", "split": "train", "subject_id": "2"},
        {"StudyID": "C", "img": '["img/c1.png", "img/c2.png"]', "Findings": "Korean 폐 text.", "Impression": "",
         "Edema": "", "ViewPosition": "", "split": "test", "subject_id": "3"},
    ]
    csv_path = write_manifest(tmp_path, rows)
    for n in (1, 2):
        write_image(tmp_path / f"img/c{n}.png")
    src = CsvManifestSource("m", str(csv_path), image_column="img", study_id_column="StudyID",
                            findings_column="Findings", impression_column="Impression")
    recs, problems = load(src)
    assert not problems.problems, problems.problems
    assert [im.view for im in recs["A"].images] == [ViewPosition.PA, ViewPosition.LATERAL]
    assert [im.view for im in recs["B"].images] == [ViewPosition.AP, ViewPosition.LL]
    assert len(recs["C"].images) == 2 and recs["C"].split is Split.TEST and recs["A"].split is Split.VAL
    assert compose_report_text(recs["A"].report) == "[FINDINGS] Lungs clear. [IMPRESSION] Normal."
    assert compose_report_text(recs["C"].report) == "[FINDINGS] Korean 폐 text."  # non-ASCII kept
    assert recs["B"].labels[OBSERVATION_INDEX["Edema"]] == LabelState.POSITIVE
    assert recs["A"].labels[OBSERVATION_INDEX["Edema"]] == LabelState.NEGATIVE
    assert recs["B"].patient_id == "2"


def test_manifest_image_root_and_fixed_split(tmp_path: Path) -> None:
    write_image(tmp_path / "pics" / "x.png")
    csv_path = write_csv(tmp_path / "sub" / "m.csv", ["filepath", "caption"], [["x.png", "Some text."]])
    recs, problems = load(CsvManifestSource("m", str(csv_path), image_root=str(tmp_path / "pics"), split="test"))
    assert not problems.problems
    (rec,) = recs.values()
    assert rec.images[0].path == str(tmp_path / "pics" / "x.png") and rec.split is Split.TEST
    assert np.all(rec.labels == LabelState.NOT_MENTIONED)
