"""Official public releases: Open-I as the NLM distributes it (XML + PNG/DICOM), R2Gen ``iu_xray``, MIMIC report
archives (zip and tar.gz); each read back to the synthetic world's truth, and their bad input named by file."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest

from cxr.data.datamodule import CXRDataModule
from cxr.data.sources import MimicCxrSource, OpenIXmlSource, R2GenSource
from cxr.data.sources.openi_xml import parse_openi_xml
from cxr.data.synthetic import load_synthetic_truth
from cxr.data.validation import DataValidationError, ImageCheck, ProblemKind, ProblemLog, find_record_problems
from cxr.labels import OBSERVATION_INDEX, LabelState
from cxr.records import Split, ViewPosition
from cxr.reports.compose import compose_report_text, normalize_whitespace


def _load(source) -> tuple[list, ProblemLog]:
    problems = ProblemLog()
    source.check(problems)
    records = source.load(problems)
    problems.extend(find_record_problems(records, source.name, ImageCheck.PROBE))
    return records, problems


@pytest.mark.parametrize("layout", ["openi-xml", "openi-xml-dicom"])
def test_openi_xml_reads_synthetic_release(layout: str, synthetic_dataset) -> None:
    out = Path(synthetic_dataset(layout, num_studies=16, image_size=32))
    truth = {t.study_id: t for t in load_synthetic_truth(out)}
    source = OpenIXmlSource(str(out), image_format="dcm" if layout.endswith("dicom") else "png")
    records, problems = _load(source)
    assert not problems.problems, problems.problems[:5]
    assert [r.study_id for r in records] == [f"CXR{n}" for n in range(1, 17)]  # numeric file order
    for rec in records:
        t = truth[rec.study_id]
        assert rec.split is Split.TEST and rec.patient_id == rec.study_id and rec.key == f"openi:{rec.study_id}"
        assert [Path(im.path) for im in rec.images] == [out / v.path for v in t.views]
        assert [im.view for im in rec.images] == [ViewPosition(v.view) for v in t.views]
        assert normalize_whitespace(rec.report.findings or "") == normalize_whitespace(t.findings_text or "")
        assert normalize_whitespace(rec.report.impression or "") == normalize_whitespace(t.impression_text or "")
        # MeSH major terms map to positive labels only; a normal study is No Finding
        assert set(rec.labels.tolist()) <= {LabelState.POSITIVE, LabelState.NOT_MENTIONED}
        for obs in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax"):
            if rec.labels[OBSERVATION_INDEX[obs]] == LabelState.POSITIVE:
                assert t.labels[OBSERVATION_INDEX[obs]] == LabelState.POSITIVE, (rec.study_id, obs)
    if layout.endswith("dicom"):  # the DICOM header gives the views the PNG release lacks
        assert {im.view for r in records for im in r.images} >= {ViewPosition.LATERAL}
        assert any(im.view.is_frontal for r in records for im in r.images)


def test_openi_xml_parser_and_mesh_options(synthetic_dataset, tmp_path: Path) -> None:
    out = Path(synthetic_dataset("openi-xml", num_studies=16, image_size=32))
    rep = parse_openi_xml(out / "ecgen-radiology" / "2.xml")
    assert rep.uid == "CXR2" and rep.image_ids[0].startswith("CXR2_")
    assert set(rep.sections) == {"COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION"}
    root = tmp_path / "nlm"
    shutil.copytree(out, root)
    xml = (root / "ecgen-radiology" / "1.xml")
    text = xml.read_text(encoding="utf-8")
    text = text.replace("</MeSH>", "<minor>Cardiomegaly/mild</minor></MeSH>")
    xml.write_text(text, encoding="utf-8")
    major = {r.study_id: r for r in _load(OpenIXmlSource(str(root)))[0]}
    both = {r.study_id: r for r in _load(OpenIXmlSource(str(root), mesh_terms="major_and_minor"))[0]}
    cardio = OBSERVATION_INDEX["Cardiomegaly"]
    assert both["CXR1"].labels[cardio] == LabelState.POSITIVE
    assert (major["CXR1"].labels == both["CXR1"].labels).sum() == 13  # only the minor term's label differs
    for uid in major:  # the layout's own minor terms are unmapped: labels unchanged
        if uid != "CXR1":
            assert major[uid].labels.tolist() == both[uid].labels.tolist()


def _plant_openi_defects(root: Path) -> None:
    (root / "ecgen-radiology" / "3.xml").write_text("<eCitation><uId id='CXR3'/><MeSH>", encoding="utf-8")
    png = sorted((root / "NLMCXR_png").glob("CXR5_*.png"))[0]
    png.unlink()
    xml = root / "ecgen-radiology" / "7.xml"
    text = xml.read_text(encoding="utf-8")
    for label in ("FINDINGS", "IMPRESSION"):
        start = text.index(f'<AbstractText Label="{label}"')
        end = text.index("\n", start)
        text = text[:start] + f'<AbstractText Label="{label}" />' + text[end:]
    xml.write_text(text, encoding="utf-8")


def test_openi_xml_bad_input_named_and_skipped(synthetic_dataset, tmp_path: Path, caplog) -> None:
    root = tmp_path / "nlm"
    shutil.copytree(Path(synthetic_dataset("openi-xml", num_studies=16, image_size=32)), root)
    _plant_openi_defects(root)
    with pytest.raises(DataValidationError) as err:
        CXRDataModule([OpenIXmlSource(str(root), split="train")], image_check=ImageCheck.PROBE).load_records()
    msg = str(err.value)
    kinds = {p.kind: p for p in err.value.problems}
    assert kinds[ProblemKind.MALFORMED_FILE].file == str(root / "ecgen-radiology" / "3.xml")
    assert "not well-formed XML" in msg and "3.xml" in msg
    missing = kinds[ProblemKind.MISSING_IMAGE]
    assert missing.file == str(root / "ecgen-radiology" / "5.xml") and "NLMCXR_png/CXR5_" in missing.detail
    assert kinds[ProblemKind.EMPTY_REPORT].file == str(root / "ecgen-radiology" / "7.xml")
    assert kinds[ProblemKind.EMPTY_REPORT].study_key == "openi:CXR7"
    with caplog.at_level(logging.WARNING):
        dm = CXRDataModule([OpenIXmlSource(str(root), split="train")], bad_input="skip")
        kept = dm.load_records()[Split.TRAIN]
    ids = {r.study_id for r in kept}
    assert "CXR3" not in ids and "CXR7" not in ids and len(ids) >= 14
    cxr5 = [r for r in kept if r.study_id == "CXR5"]
    assert not cxr5 or all(Path(im.path).is_file() for im in cxr5[0].images)  # only the missing image went
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "malformed file: 1" in warning and "empty report: 1" in warning and "missing image: 1" in warning


def test_openi_xml_missing_folder_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="ecgen-radiology"):
        CXRDataModule([OpenIXmlSource(str(tmp_path))])


def test_r2gen_iu_xray_reads_synthetic_folder(synthetic_dataset) -> None:
    out = Path(synthetic_dataset("iu-xray", num_studies=24, image_size=32))
    truth = {t.study_id: t for t in load_synthetic_truth(out)}
    annotation = json.loads((out / "annotation.json").read_text())
    assert set(annotation) == {"train", "val", "test"} and all(annotation.values())
    records, problems = _load(R2GenSource(str(out)))
    assert not problems.problems, problems.problems[:5]
    assert {r.study_id for r in records} == set(truth)
    for rec in records:
        t = truth[rec.study_id]
        assert rec.split is Split.parse(t.split) and rec.patient_id == t.patient_id
        assert [Path(im.path) for im in rec.images] == [out / v.path for v in t.views]
        assert Path(rec.images[0].path).name == "0.png" and Path(rec.images[0].path).parent.name == rec.study_id
        assert compose_report_text(rec.report) == normalize_whitespace(t.findings_text)  # untagged, one string
        assert (rec.labels == LabelState.NOT_MENTIONED).all()


def _write_annotation(root: Path, data: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotation.json").write_text(json.dumps(data), encoding="utf-8")


def _r2gen_world(tmp_path: Path) -> Path:
    """An R2Gen ``annotation.json``: IU bare names, MIMIC items (one per image), and three bad rows."""
    from _data_writers import write_image

    root = tmp_path / "r2gen"
    for name in ("CXR1_IM-0001-1001.png", "CXR1_IM-0001-2001.png", "p10/p10000032/s50000001/aa.jpg",
                 "p10/p10000032/s50000001/bb.jpg"):
        write_image(root / "images" / name)
    _write_annotation(root, {
        "train": [dict(R2GEN_ITEM, id="CXR1_IM-0001", image_path=["CXR1_IM-0001-1001.png", "CXR1_IM-0001-2001.png"]),
                  dict(R2GEN_ITEM, id="aa", study_id=50000001, subject_id=10000032,
                       image_path=["p10/p10000032/s50000001/aa.jpg"]),
                  dict(R2GEN_ITEM, id="bb", study_id=50000001, subject_id=10000032,
                       image_path=["p10/p10000032/s50000001/bb.jpg"]),
                  dict(R2GEN_ITEM, id="CXR2_IM-0002", report="   ", image_path=["CXR1_IM-0001-1001.png"]),
                  dict(R2GEN_ITEM, id="CXR3_IM-0003", image_path=["CXR3_IM-0003/0.png"]),
                  {"id": "CXR4_IM-0004", "report": "x"}],
        "val": [], "test": []})
    return root


R2GEN_ITEM = {"report": "No acute disease.", "split": "train"}


def test_r2gen_bare_names_and_mimic_items_grouped_by_study(tmp_path: Path) -> None:
    records = R2GenSource(str(_r2gen_world(tmp_path))).load(ProblemLog())
    by_id = {r.study_id: r for r in records}
    assert len(by_id["CXR1_IM-0001"].images) == 2
    mimic = by_id["50000001"]  # one item per image, grouped by study_id; subject_id is the patient
    assert mimic.patient_id == "10000032" and [im.image_id for im in mimic.images] == [
        "p10/p10000032/s50000001/aa.jpg", "p10/p10000032/s50000001/bb.jpg"]


def test_r2gen_bad_rows_are_reported_with_file_and_field(tmp_path: Path) -> None:
    root = _r2gen_world(tmp_path)
    problems = ProblemLog()
    R2GenSource(str(root)).load(problems)
    found = {(p.kind, p.field) for p in problems.problems}
    ann = str(root / "annotation.json")
    assert problems.problems and all(p.file == ann for p in problems.problems)
    assert (ProblemKind.EMPTY_REPORT, "train[4].report") in found
    assert (ProblemKind.MISSING_IMAGE, "train[5].image_path") in found
    assert (ProblemKind.BAD_ROW, "train[6]") in found


def test_r2gen_duplicate_ids_and_malformed_json(tmp_path: Path) -> None:
    root = _r2gen_world(tmp_path)
    _write_annotation(root, {"train": [dict(R2GEN_ITEM, id="x", image_path=["CXR1_IM-0001-1001.png"])],
                             "val": [dict(R2GEN_ITEM, id="x", image_path=["CXR1_IM-0001-1001.png"])]})
    assert ProblemKind.DUPLICATE_ID in {p.kind for p in _load(R2GenSource(str(root)))[1].problems}
    (root / "annotation.json").write_text('{"train": [', encoding="utf-8")
    with pytest.raises(DataValidationError, match="annotation.json.*not valid JSON"):
        R2GenSource(str(root)).load(ProblemLog())


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar"])
def test_mimic_reports_from_tar_archive(suffix: str, synthetic_dataset, tmp_path: Path) -> None:
    out = Path(synthetic_dataset("mimic-cxr-jpg", num_studies=12, image_size=32))
    direct = {r.study_id: r for r in _load(MimicCxrSource(str(out)))[0]}
    archive = tmp_path / f"mimic-cxr-reports{suffix}"
    with tarfile.open(archive, "w:gz" if suffix != ".tar" else "w") as tar:
        for txt in sorted((out / "files").rglob("*.txt")):
            tar.add(txt, arcname=f"mimic-cxr-reports/{txt.relative_to(out).as_posix()}")
    images = tmp_path / "images"
    shutil.copytree(out / "files", images / "files", ignore=shutil.ignore_patterns("*.txt"))
    records, problems = _load(MimicCxrSource(str(images), tables_dir=str(out), reports_zip=str(archive)))
    assert not problems.problems, problems.problems[:3]
    assert {r.study_id: r.report for r in records} == {k: r.report for k, r in direct.items()}
    # a member missing from the archive is named with the archive's path
    first = sorted((out / "files").rglob("*.txt"))[0]
    with tarfile.open(archive, "w:gz" if suffix != ".tar" else "w") as tar:
        tar.add(first, arcname=first.relative_to(out).as_posix())
    _, problems = _load(MimicCxrSource(str(images), tables_dir=str(out), reports_zip=str(archive)))
    missing = [p for p in problems.problems if p.kind is ProblemKind.MISSING_REPORT]
    assert len(missing) == len(direct) - 1 and missing[0].file.startswith(f"{archive}:files/p1")
    archive.write_bytes(b"not an archive")
    with pytest.raises(DataValidationError, match="unreadable report archive"):
        MimicCxrSource(str(images), tables_dir=str(out), reports_zip=str(archive)).load(ProblemLog())


@pytest.mark.parametrize("layout", ["openi-xml", "iu-xray"])  # DICOM bytes: see test_synthetic_layouts
def test_release_layouts_are_byte_deterministic(layout: str, tmp_path: Path) -> None:
    from cxr.data.synthetic import write_synthetic_dataset

    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_synthetic_dataset(tmp_path / name, layout, 6, seed=seed, image_size=32)
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    assert snapshot(tmp_path / "a") != snapshot(tmp_path / "c")
