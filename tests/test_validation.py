"""The bad-input corpus: every defect is reported with what and where (raise), or counted and dropped (skip)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _bad_images import BAD_IMAGES, write_bad_image
from _data_writers import (
    MimicStudy,
    default_mimic_studies,
    write_chexpert_plus,
    write_csv,
    write_image,
    write_manifest,
    write_mimic,
    write_openi,
)

from cxr.data.datamodule import CXRDataModule
from cxr.data.sources import ChexpertPlusSource, CsvManifestSource, MimicCxrSource, OpenISource
from cxr.data.sources.base import DatasetSource
from cxr.data.validation import DataValidationError, ProblemKind
from cxr.records import Split

GOOD = 6  # studies of a clean manifest


def rows(n: int = GOOD) -> list[dict]:
    return [{"study_id": f"s{i}", "patient_id": f"p{i}", "image_path": f"img/{i}.png", "report": f"Report {i}.",
             "view": "PA", "split": "train", "Edema": "1"} for i in range(n)]


def manifest(tmp: Path, mutate: Callable[[list[dict]], None] | None = None, **kwargs) -> CsvManifestSource:
    data = rows()
    if mutate:
        mutate(data)
    return CsvManifestSource("m", str(write_manifest(tmp, data)), **kwargs)


def set_cell(i: int, col: str, value: str) -> Callable[[list[dict]], None]:
    def mutate(data: list[dict]) -> None:
        data[i][col] = value
    return mutate


def truncate(path: Path, keep: float = 0.5) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


@dataclass
class Case:
    """One planted defect: the source, the problem kind, words the message must contain, studies kept by skip."""

    build: Callable[[Path], DatasetSource]
    kind: ProblemKind
    where: tuple[str, ...]
    kept: int | None  # None: fatal (skip raises too)


def _missing_image(tmp: Path) -> DatasetSource:
    src = manifest(tmp)
    (tmp / "img" / "2.png").unlink()
    return src


def _mimic(tmp: Path, studies: list[MimicStudy] | None = None, **kwargs) -> MimicCxrSource:
    write_mimic(tmp, studies)
    return MimicCxrSource(str(tmp), **kwargs)


def _mimic_missing_report(tmp: Path) -> DatasetSource:
    studies = default_mimic_studies()
    studies[1].write_report = False
    return _mimic(tmp, studies)


def _mimic_bad_subject(tmp: Path) -> DatasetSource:
    studies = default_mimic_studies()
    studies[2].subject = "1000004X"
    return _mimic(tmp, studies)


def _mimic_bad_label(tmp: Path) -> DatasetSource:
    studies = default_mimic_studies()
    studies[0].labels = {"Edema": "yes"}
    return _mimic(tmp, studies)


def _mimic_duplicate_label_row(tmp: Path) -> DatasetSource:
    src = _mimic(tmp)
    from cxr.labels import CHEXPERT_OBSERVATIONS
    path = tmp / "mimic-cxr-2.0.0-chexpert.csv"
    write_csv(path, ["subject_id", "study_id", *CHEXPERT_OBSERVATIONS],
              [["10000032", "50000001"] + [""] * 14, ["10000032", "50000001"] + ["1.0"] * 14])
    (tmp / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    return src


def _mimic_missing_split_table(tmp: Path) -> DatasetSource:
    src = _mimic(tmp)
    (tmp / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    return src


def _mimic_empty_report(tmp: Path) -> DatasetSource:
    studies = default_mimic_studies()
    studies[3].report = "   \n"
    return _mimic(tmp, studies)


def _chexpert_missing_column(tmp: Path) -> DatasetSource:
    write_chexpert_plus(tmp)
    frame = (tmp / "df_chexpert_plus_240401.csv").read_text().replace("section_impression", "section_impresion", 1)
    (tmp / "df_chexpert_plus_240401.csv").write_text(frame)
    return ChexpertPlusSource(str(tmp))


def _chexpert_bad_label(tmp: Path) -> DatasetSource:
    write_chexpert_plus(tmp, labels={"train/patient00001/study1/view1_frontal.jpg": {"Edema": 2.0}})
    return ChexpertPlusSource(str(tmp))


def _chexpert_empty_dcm_path(tmp: Path) -> DatasetSource:
    from _data_writers import default_chexpert_plus_rows

    from cxr.data.dicom import write_dicom

    data = default_chexpert_plus_rows()
    data[4]["path_to_dcm"] = ""  # the valid-split study's only image
    write_chexpert_plus(tmp, data, write_images=False)
    for row in data[:4]:
        path = tmp / "DICOM" / row["path_to_dcm"]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dicom(path, np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 16, bits_stored=12)
    return ChexpertPlusSource(str(tmp), image_format="dcm")


def _openi_no_projection(tmp: Path) -> DatasetSource:
    write_openi(tmp, projections=[["1", "1_IM-0001-4001.dcm.png", "Frontal"], ["2", "2_IM-0652-1001.dcm.png",
                                                                            "Frontal"]])
    return OpenISource(str(tmp))


def _openi_duplicate_uid(tmp: Path) -> DatasetSource:
    reports = [["1", "normal", "normal", "", "", "", "Clear.", "Normal."],
               ["1", "normal", "normal", "", "", "", "Clear again.", "Normal."],
               ["2", "normal", "normal", "", "", "", "Clear.", "Normal."]]
    write_openi(tmp, reports=reports, projections=[["1", "a.png", "Frontal"], ["2", "b.png", "Frontal"]])
    return OpenISource(str(tmp))


def _patient_two_splits(tmp: Path) -> DatasetSource:
    def mutate(data: list[dict]) -> None:
        data[1]["patient_id"] = "p0"
        data[1]["split"] = "test"
    return manifest(tmp, mutate)


def _duplicate_image_row(tmp: Path) -> DatasetSource:
    data = rows()
    for r in data:
        del r["study_id"]
    data[5]["image_path"] = "img/0.png"
    return CsvManifestSource("m", str(write_manifest(tmp, data)))


def _cp1252_manifest(tmp: Path) -> DatasetSource:
    src = manifest(tmp)
    path = tmp / "manifest.csv"
    path.write_bytes(path.read_bytes().replace(b"Report 2.", "Réduction 2.".encode("cp1252")))
    return src


def _duplicate_column(tmp: Path) -> DatasetSource:
    path = write_manifest(tmp, rows())
    lines = path.read_text().splitlines()
    lines = [lines[0] + ",report"] + [line + ",other text" for line in lines[1:]]
    path.write_text("\n".join(lines) + "\n")
    return CsvManifestSource("m", str(path))


def _second_row(change: dict[str, str]) -> Callable[[Path], DatasetSource]:
    """Study s1 gets a second row (another image) that differs from its first row in ``change``."""
    def build(tmp: Path) -> DatasetSource:
        def mutate(data: list[dict]) -> None:
            data.append({**data[1], "image_path": "img/1b.png", **change})
        return manifest(tmp, mutate)
    return build


def _mimic_headers_only(tmp: Path) -> DatasetSource:
    studies = default_mimic_studies()
    studies[3].report = " FINAL REPORT\n EXAMINATION:\n \n IMPRESSION:\n \n ___\n"
    return _mimic(tmp, studies)


def _mimic_study_two_splits(tmp: Path) -> DatasetSource:
    studies = default_mimic_studies()
    studies[0].dicoms = [("aa-01", "PA")]
    studies.append(MimicStudy("10000032", "50000001", [("aa-09", "LATERAL")], split="test", labels=None))
    studies.insert(1, studies.pop())  # its second row right after the first: row 2 of the split table
    return _mimic(tmp, studies)


def _mimic_duplicate_dicom(tmp: Path) -> DatasetSource:
    studies = default_mimic_studies()
    studies.append(MimicStudy("13000070", "50000007", [("aa-03", "PA")], labels=None))
    return _mimic(tmp, studies)


def _openi_orphan_images(tmp: Path) -> DatasetSource:
    write_openi(tmp, projections=[["1", "1_IM-0001-4001.dcm.png", "Frontal"], ["2", "2_IM-0652-1001.dcm.png", "Frontal"],
                                  ["3", "3_IM-1384-2001.dcm.png", "Frontal"], ["9", "9_IM-0009-1001.dcm.png", "Frontal"]])
    return OpenISource(str(tmp))


def _chexpert_bad_path(tmp: Path) -> DatasetSource:
    from _data_writers import default_chexpert_plus_rows

    data = default_chexpert_plus_rows()
    data[0]["path_to_image"] = "train/scan_0001.jpg"
    write_chexpert_plus(tmp, data, labels={})
    return ChexpertPlusSource(str(tmp))


def _chexbert_not_json(tmp: Path) -> DatasetSource:
    write_chexpert_plus(tmp)
    labels = tmp / "chexbert_labels" / "report_fixed.json"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    return ChexpertPlusSource(str(tmp))


CASES: dict[str, Case] = {
    "manifest missing image column": Case(
        lambda t: CsvManifestSource("m", str(write_csv(t / "m.csv", ["file", "report"], [["a.png", "x"]]))),
        ProblemKind.MISSING_COLUMN, ("m.csv", "image_path"), None),
    "manifest file missing": Case(lambda t: CsvManifestSource("m", str(t / "absent.csv")),
                                  ProblemKind.MISSING_FILE, ("absent.csv",), None),
    "configured column absent": Case(lambda t: manifest(t, text_column="Report_Text"),
                                     ProblemKind.MISSING_COLUMN, ("manifest.csv", "Report_Text"), None),
    "empty report": Case(lambda t: manifest(t, set_cell(1, "report", "  ")), ProblemKind.EMPTY_REPORT,
                         ("row 2", "'report'", "m:s1"), GOOD - 1),
    "bad label value": Case(lambda t: manifest(t, set_cell(2, "Edema", "2")), ProblemKind.BAD_LABEL,
                            ("row 3", "'Edema'", "'2'"), GOOD - 1),
    "bad split value": Case(lambda t: manifest(t, set_cell(0, "split", "training2")), ProblemKind.BAD_SPLIT,
                            ("row 1", "'split'", "training2"), GOOD - 1),
    "unknown view (strict)": Case(lambda t: manifest(t, set_cell(4, "view", "SWIMMERS"), strict_views=True),
                                  ProblemKind.UNKNOWN_VIEW, ("row 5", "'view'", "SWIMMERS"), GOOD - 1),
    "empty image path": Case(lambda t: manifest(t, set_cell(3, "image_path", "")), ProblemKind.EMPTY_PATH,
                             ("row 4", "'image_path'"), GOOD - 1),
    "patient in two splits": Case(_patient_two_splits, ProblemKind.PATIENT_IN_TWO_SPLITS,
                                  ("patient p0", "m:s0", "m:s1"), GOOD - 2),
    "duplicate image row": Case(_duplicate_image_row, ProblemKind.DUPLICATE_ID, ("row 6", "img/0.png"), GOOD - 2),
    "mimic missing report": Case(_mimic_missing_report, ProblemKind.MISSING_REPORT,
                                 ("p10000032/s50000002.txt", "mimic:50000002"), 5),
    "mimic non-numeric subject": Case(_mimic_bad_subject, ProblemKind.BAD_ID,
                                      ("split.csv.gz", "row 4", "'subject_id'", "1000004X"), 5),
    "mimic bad label": Case(_mimic_bad_label, ProblemKind.BAD_LABEL,
                            ("chexpert.csv.gz", "row 1", "'Edema'", "'yes'"), 5),
    "mimic duplicate label row": Case(_mimic_duplicate_label_row, ProblemKind.DUPLICATE_ID,
                                      ("chexpert.csv", "row 2", "mimic:50000001"), 5),
    "mimic missing split table": Case(_mimic_missing_split_table, ProblemKind.MISSING_FILE,
                                      ("mimic-cxr-2.0.0-split.csv[.gz]",), None),
    "mimic empty report file": Case(_mimic_empty_report, ProblemKind.EMPTY_REPORT,
                                    ("s50000004.txt", "mimic:50000004"), 5),
    "chexpert-plus missing column": Case(_chexpert_missing_column, ProblemKind.MISSING_COLUMN,
                                         ("df_chexpert_plus_240401.csv", "'section_impression'"), None),
    "chexpert-plus bad chexbert value": Case(_chexpert_bad_label, ProblemKind.BAD_LABEL,
                                             ("report_fixed.json", "row 1", "'Edema'"), 2),
    "chexpert-plus empty path_to_dcm": Case(_chexpert_empty_dcm_path, ProblemKind.EMPTY_PATH,
                                            ("df_chexpert_plus_240401.csv", "row 5", "'path_to_dcm'",
                                             "chexpert_plus:patient64541/study1"), 2),
    "openi study without images": Case(_openi_no_projection, ProblemKind.NO_USABLE_IMAGE,
                                       ("indiana_projections.csv", "openi:3"), 2),
    "manifest not UTF-8 (cp1252 export)": Case(_cp1252_manifest, ProblemKind.BAD_ENCODING,
                                               ("manifest.csv", "line 4", "0xe9", "'encoding' option", "cp1252"),
                                               None),
    "manifest repeats a header column": Case(_duplicate_column, ProblemKind.DUPLICATE_COLUMN,
                                             ("manifest.csv", "'report'", "columns [4, 8]"), None),
    "study rows disagree on the report": Case(_second_row({"report": "Another text."}), ProblemKind.CONFLICTING_ROWS,
                                              ("row 7", "'report'", "m:s1", "differs from row 2"), GOOD - 1),
    "study rows disagree on a label": Case(_second_row({"Edema": "0"}), ProblemKind.CONFLICTING_ROWS,
                                           ("row 7", "'Edema'", "m:s1", "label 0 differs from 1 on row 2"), GOOD - 1),
    "study rows disagree on the patient": Case(_second_row({"patient_id": "p9"}), ProblemKind.CONFLICTING_ROWS,
                                               ("row 7", "'patient_id'", "m:s1", "patient id differs"), GOOD - 1),
    "image list nested too deeply": Case(lambda t: manifest(t, set_cell(2, "image_path", "[" * 20000 + "]" * 20000)),
                                         ProblemKind.BAD_ROW, ("row 3", "'image_path'", "nested too deeply"),
                                         GOOD - 1),
    "image list not flat": Case(lambda t: manifest(t, set_cell(2, "image_path", '[["img/2.png"]]')),
                                ProblemKind.BAD_ROW, ("row 3", "'image_path'", "flat list", "element 1 is a list"),
                                GOOD - 1),
    "openi duplicate uid": Case(_openi_duplicate_uid, ProblemKind.DUPLICATE_ID,
                                ("indiana_reports.csv", "row 2", "openi:1"), 1),
}


def _bad_image(name: str) -> Callable[[Path], DatasetSource]:
    """The clean manifest with study s3's image replaced by the defective file ``name`` of BAD_IMAGES."""
    def build(tmp: Path) -> DatasetSource:
        data = rows()
        data[3]["image_path"] = f"img/3{BAD_IMAGES[name].suffix}"
        source = CsvManifestSource("m", str(write_manifest(tmp, data, write_images=False)))
        for i in (0, 1, 2, 4, 5):
            write_image(tmp / "img" / f"{i}.png", seed=i)
        write_bad_image(tmp / "img" / "3", name)
        return source
    return build


def _report_cell(text: str) -> Callable[[Path], DatasetSource]:
    return lambda t: manifest(t, set_cell(1, "report", text))


for _name, _bad in BAD_IMAGES.items():
    CASES[_name] = Case(_bad_image(_name), ProblemKind.MISSING_IMAGE if _bad.missing else ProblemKind.UNREADABLE_IMAGE,
                        (f"img/3{_bad.suffix}", "m:s3", *_bad.words), GOOD - 1)
CASES.update({
    "report only a de-identification mark": Case(_report_cell("___"), ProblemKind.EMPTY_REPORT,
                                                 ("row 2", "'report'", "m:s1", "no clinical content"), GOOD - 1),
    "report only punctuation": Case(_report_cell(" . "), ProblemKind.EMPTY_REPORT,
                                    ("row 2", "m:s1", "no clinical content"), GOOD - 1),
    "report only a section header": Case(_report_cell("IMPRESSION:"), ProblemKind.EMPTY_REPORT,
                                         ("row 2", "m:s1", "no clinical content"), GOOD - 1),
    "report only zero-width spaces": Case(_report_cell("\u200b\u200b \u200b"), ProblemKind.EMPTY_REPORT,
                                          ("row 2", "m:s1", "no clinical content"), GOOD - 1),
    "mimic report with headers only": Case(_mimic_headers_only, ProblemKind.EMPTY_REPORT,
                                           ("s50000004.txt", "mimic:50000004", "no clinical content"), 5),
    "empty study id": Case(lambda t: manifest(t, set_cell(2, "study_id", " ")), ProblemKind.BAD_ID,
                           ("row 3", "'study_id'", "empty study id"), GOOD - 1),
    "empty patient id": Case(lambda t: manifest(t, set_cell(2, "patient_id", "")), ProblemKind.BAD_ID,
                             ("row 3", "'patient_id'", "m:s2"), GOOD - 1),
    "view list of the wrong length": Case(lambda t: manifest(t, set_cell(4, "view", "PA;LATERAL")), ProblemKind.BAD_ROW,
                                          ("row 5", "'view'", "2 view values for 1 images"), GOOD - 1),
    "study rows disagree on the split": Case(_second_row({"split": "test"}), ProblemKind.CONFLICTING_ROWS,
                                             ("row 7", "'split'", "m:s1", "split test differs from train"),
                                             GOOD - 1),
    "mimic study in two splits": Case(_mimic_study_two_splits, ProblemKind.BAD_ROW,
                                      ("split.csv.gz", "row 2", "'split'", "splits train and test"), 5),
    "mimic duplicate dicom_id": Case(_mimic_duplicate_dicom, ProblemKind.DUPLICATE_ID,
                                     ("split.csv.gz", "'dicom_id'", "dicom_id aa-03 also on row"), 6),
    "openi images without a report row": Case(_openi_orphan_images, ProblemKind.BAD_ROW,
                                              ("indiana_projections.csv", "row 4", "uid 9 has images but no report row"), 3),
    "chexpert-plus path without patient/study": Case(_chexpert_bad_path, ProblemKind.BAD_ID,
                                                     ("df_chexpert_plus_240401.csv", "row 1", "'path_to_image'"),
                                                     3),  # its study keeps its other (lateral) row
    "chexbert label line not JSON": Case(_chexbert_not_json, ProblemKind.BAD_ROW,
                                         ("report_fixed.json", "row 2", "not a JSON object"), 3),
})


def build_dm(source: DatasetSource, policy: str) -> CXRDataModule:
    return CXRDataModule(sources=[source], image_size=16, batch_size=1, num_workers=0, bad_input=policy,
                         keep_lateral_only=True)


def n_studies(dm: CXRDataModule) -> int:
    return sum(len(v) for v in dm.load_records().values())


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40 and len({c.kind for c in CASES.values()}) >= 18
    assert set(BAD_IMAGES) <= set(CASES)  # every image defect of the SKIP training run is in the corpus


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_which_image_defects_only_a_full_decode_finds(name: str, tmp_path: Path) -> None:
    from cxr.data.image_check import ImageCheck, check_one

    path = str(write_bad_image(tmp_path / "x", name))
    probe, decode = check_one(path, ImageCheck.PROBE), check_one(path, ImageCheck.DECODE)
    assert not decode.ok and probe.ok is not BAD_IMAGES[name].probe_catches, (probe, decode)


@pytest.mark.parametrize("name", list(CASES))
def test_defect_is_named_with_its_location(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    source = case.build(tmp_path)
    with pytest.raises(DataValidationError) as exc:
        build_dm(source, "raise").load_records()
    message = str(exc.value)
    assert case.kind.value in message, message
    for word in case.where:
        assert word in message, (word, message)
    assert any(p.kind is case.kind for p in exc.value.problems)


@pytest.mark.parametrize("name", list(CASES))
def test_skip_drops_and_counts(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    case = CASES[name]
    source = case.build(tmp_path)
    if case.kept is None:  # a missing table/column cannot be skipped: start-up fails
        with pytest.raises(DataValidationError, match=case.kind.value):
            build_dm(source, "skip").load_records()
        return
    with caplog.at_level(logging.INFO):
        assert n_studies(build_dm(source, "skip")) == case.kept
    summary = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{case.kind.value}: " in summary and "skipped" in summary
    # the counts include what the source dropped while reading its tables (was "skipped 0 of N")
    skipped, total, rows = (int(v) for v in re.search(
        r"skipped (\d+) of (\d+) studies .*?(\d+) table row", summary).groups())
    assert total - skipped == case.kept and skipped + rows >= 1, summary
    assert "Report " not in summary and "Heart size" not in summary  # counts and locations only, no text


def test_missing_column_fails_before_any_image_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cxr.data.images as images

    def forbidden(*args, **kwargs):
        raise AssertionError("an image was read")

    monkeypatch.setattr(images, "probe_image", forbidden)
    monkeypatch.setattr(images, "load_image", forbidden)
    bad = write_csv(tmp_path / "m.csv", ["image", "txt"], [["a.png", "x"]])
    with pytest.raises(DataValidationError, match="no report column"):
        CXRDataModule(sources=[CsvManifestSource("m", str(bad))])


def test_all_problems_in_one_error_grouped_with_counts(tmp_path: Path) -> None:
    def mutate(data: list[dict]) -> None:
        data[0]["Edema"] = "7"
        data[1]["Edema"] = "maybe"
        data[2]["report"] = ""
        data[3]["split"] = "holdout"
    source = manifest(tmp_path, mutate)
    (tmp_path / "img" / "5.png").unlink()
    with pytest.raises(DataValidationError) as exc:
        build_dm(source, "raise").load_records()
    message = str(exc.value)
    assert message.startswith("invalid input data (bad_input=raise): 5 problem(s)")
    assert "bad label value (2):" in message and "empty report (1):" in message
    assert "bad split value (1):" in message and "missing image (1):" in message


def test_image_check_none_skips_file_checks(tmp_path: Path) -> None:
    source = _missing_image(tmp_path)
    dm = CXRDataModule(sources=[source], image_check="none", num_workers=0)
    assert n_studies(dm) == GOOD


def test_patients_in_two_splits_are_found_in_one_pass_over_the_records() -> None:
    """A manifest split per study puts many patients in two splits; each must not rescan every record."""
    from cxr.data.validation import ImageCheck, find_record_problems
    from cxr.records import ImageRef, ReportSections, Split, StudyRecord

    class CountingList(list):
        iterations = 0

        def __iter__(self):
            CountingList.iterations += 1
            return super().__iter__()

    records = CountingList(
        StudyRecord(study_id=f"s{i}", patient_id=f"p{i // 2}", split=(Split.TRAIN, Split.TEST)[i % 2],
                    images=(ImageRef(f"/x/{i}.png"),), report=ReportSections(full_text="Text."), source="m")
        for i in range(200))
    CountingList.iterations = 0
    problems = find_record_problems(records, "source 'm'", ImageCheck.NONE)
    assert len(problems) == 200 and {p.kind for p in problems} == {ProblemKind.PATIENT_IN_TWO_SPLITS}
    assert [p.study_key for p in problems[:2]] == ["m:s0", "m:s1"]
    assert "patient p0 is in splits ['test', 'train']" in str(problems[0])
    assert CountingList.iterations <= 2  # was one scan per offending patient (100 here)


def test_manifest_encoding_option_reads_a_cp1252_export(tmp_path: Path) -> None:
    source = _cp1252_manifest(tmp_path)
    source.encoding = "cp1252"
    records = {r.study_id: r for r in build_dm(source, "raise").load_records()[Split.TRAIN]}
    assert records["s2"].report.full_text == "Réduction 2."


def test_manifest_with_a_byte_order_mark_is_read_by_default(tmp_path: Path) -> None:
    data = rows()
    data[1]["report"] = "Épanchement pleural."
    source = CsvManifestSource("m", str(write_manifest(tmp_path, data, bom=True)))
    records = {r.study_id: r for r in build_dm(source, "raise").load_records()[Split.TRAIN]}
    assert records["s1"].report.full_text == "Épanchement pleural." and "s0" in records  # BOM not in 'study_id'


def test_undecodable_header_fails_at_start_up_naming_the_option(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes("image_path,report,Befund_Größe\na.png,x,1\n".encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"(?s)bad encoding.*line 1.*'encoding' option"):
        CXRDataModule(sources=[CsvManifestSource("m", str(path))])


def test_agreeing_study_rows_merge_and_a_later_row_supplies_the_report(tmp_path: Path) -> None:
    def mutate(data: list[dict]) -> None:
        data.append({**data[1], "image_path": "img/1b.png", "report": " Report   1. "})  # same text, spacing
        data[2]["report"] = ""  # s2's report is only on its second row, with its label
        data[2]["Edema"] = ""
        data.append({**data[2], "image_path": "img/2b.png", "report": "Report 2.", "Edema": "-1"})
    records = {r.study_id: r for r in build_dm(manifest(tmp_path, mutate), "raise").load_records()[Split.TRAIN]}
    assert len(records) == GOOD
    assert [Path(im.path).name for im in records["s1"].images] == ["1.png", "1b.png"]
    assert records["s1"].report.full_text == "Report 1."
    assert records["s2"].report.full_text == "Report 2." and len(records["s2"].images) == 2
    from cxr.labels import OBSERVATION_INDEX
    assert records["s2"].labels[OBSERVATION_INDEX["Edema"]] == -1


def test_a_semicolon_in_an_existing_file_name_is_one_file(tmp_path: Path) -> None:
    from _data_writers import write_image

    data = rows()
    data[0]["image_path"] = "img/scan;0.png"
    data[1]["image_path"] = "img/1.png;img/1b.png"  # a real two-image cell still splits
    source = CsvManifestSource("m", str(write_manifest(tmp_path, data, write_images=False)))
    for n, name in enumerate(["scan;0.png", "1.png", "1b.png", "2.png", "3.png", "4.png", "5.png"]):
        write_image(tmp_path / "img" / name, seed=n)
    records = {r.study_id: r for r in build_dm(source, "raise").load_records()[Split.TRAIN]}
    assert [Path(im.path).name for im in records["s0"].images] == ["scan;0.png"]
    assert [Path(im.path).name for im in records["s1"].images] == ["1.png", "1b.png"]
