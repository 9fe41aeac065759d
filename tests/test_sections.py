"""MIMIC-CXR section parsing follows the official parser's rules (datasets.md §1.6)."""

from __future__ import annotations

from cxr.reports.compose import compose_report_text
from cxr.reports.mimic_sections import mimic_report_sections, normalize_section_name, split_sections

OFFICIAL_EXAMPLE = (
    "                                 FINAL REPORT\n"
    " EXAMINATION:  CHEST (PA AND LAT)\n"
    " \n"
    " INDICATION:  ___ year old woman with ?pleural effusion  // ?pleural effusion\n"
    " \n"
    " TECHNIQUE:  Chest PA and lateral\n"
    " \n"
    " COMPARISON:  ___\n"
    " \n"
    " FINDINGS:\n"
    " \n"
    " Cardiac size cannot be evaluated.  Large left pleural effusion is new.  Right\n"
    " lung is clear.\n"
    " \n"
    " IMPRESSION:\n"
    " \n"
    " Large left pleural effusion\n"
)


def test_official_example_sections() -> None:
    names = [s.name for s in split_sections(OFFICIAL_EXAMPLE)]
    assert names == ["preamble", "examination", "indication", "technique", "comparison", "findings", "impression"]
    rs = mimic_report_sections(OFFICIAL_EXAMPLE)
    assert rs.findings.startswith("Cardiac size cannot be evaluated.") and rs.findings.endswith("lung is clear.")
    assert rs.impression == "Large left pleural effusion"
    text = compose_report_text(rs)
    assert text.startswith("[FINDINGS] Cardiac size") and text.endswith("[IMPRESSION] Large left pleural effusion")


def test_name_normalisation_rules() -> None:
    assert normalize_section_name("CONCLUSION") == "impression"
    assert normalize_section_name("IMPRESSON") == "impression"  # misspelling map
    assert normalize_section_name("FINDINGS AND IMPRESSION") == "impression"
    assert normalize_section_name("REASON FOR EXAMINATION") == "indication"
    assert normalize_section_name("FINAL IMPRESSION") == "impression"  # contains a main-section word
    assert normalize_section_name("PORTABLE AP CHEST") == "findings"  # looks like a chest-view title
    assert normalize_section_name("CHEST, TWO VIEWS") == "findings"
    assert normalize_section_name("NOTIFICATION") == "notification"


def test_digits_are_not_headers_and_header_line_is_skipped() -> None:
    text = "\n EXAM 2:  chest\n FINDINGS:  No effusion.\n IMPRESSION:  Normal.\n"
    sections = split_sections(text)
    assert [s.name for s in sections] == ["preamble", "findings", "impression"]
    assert "EXAM 2" in sections[0].text  # a digit keeps "EXAM 2:" from being a header


def test_empty_findings_dropped_and_last_one_wins() -> None:
    text = "\n FINDINGS:\n \n IMPRESSION:  First.\n IMPRESSION:  Second.\n"
    rs = mimic_report_sections(text)
    assert rs.findings is None
    assert rs.impression == "Second."


def test_last_paragraph_fallback() -> None:
    text = ("                    FINAL REPORT\n INDICATION:  Cough.\n \n COMPARISON:  None.\n \n"
            " Lungs are clear.  No pneumothorax.\n \n Heart size normal.\n")
    sections = split_sections(text)
    assert sections[-1].name == "last_paragraph"
    rs = mimic_report_sections(text)
    assert rs.findings is None and rs.impression is None
    assert "Lungs are clear." in rs.full_text and "Heart size normal." in rs.full_text
    assert "None." not in rs.full_text  # the comparison's first paragraph stays in place
    assert compose_report_text(rs).startswith("Lungs are clear.")


def test_no_header_is_full_report() -> None:
    sections = split_sections("just some text without headers")
    assert [s.name for s in sections] == ["full report"]
    assert mimic_report_sections("just some text").full_text == "just some text"
