"""MIMIC-CXR report sectioning, following the rules of the official parser (MIT-LCP/mimic-cxr, txt/).

Our own implementation of the behaviour described in ``section_parser.py`` / ``create_section_files.py``:

* a header is ``\\n <UPPER CASE, spaces, ()/,->:`` followed by whitespace (no digits);
* text before the first header is the ``preamble``; with no header at all the text is one ``full report``;
* the search for the next header starts after the first newline following a header;
* names are lower-cased and normalised (a map of synonyms and misspellings, then "contains a main section
  word", then "looks like a chest-view title" → ``findings``);
* empty ``findings``/``impression`` sections are dropped;
* when neither remains and the last section has a blank line (``\\n \\n``), its first paragraph stays and the
  rest becomes ``last_paragraph``.

The 31 hand-fixed spans and 23 renamed sections of the official ``custom_mimic_cxr_rules`` are not
reproduced (they are per-study exceptions, not rules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxr.records import ReportSections

HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)

#: Frequent names, synonyms and misspellings (lower case) → normalised name.
SECTION_NAME_MAP: dict[str, str] = {
    "preamble": "preamble", "impression": "impression", "comparison": "comparison",
    "indication": "indication", "findings": "findings", "examination": "examination",
    "technique": "technique", "history": "history", "comparisons": "comparison",
    "clinical history": "history", "reason for examination": "indication", "notification": "notification",
    "reason for exam": "indication", "clinical information": "history", "exam": "examination",
    "clinical indication": "indication", "conclusion": "impression", "chest, two views": "findings",
    "recommendation(s)": "recommendations", "type of examination": "examination",
    "reference exam": "comparison", "patient history": "history", "addendum": "addendum",
    "comparison exam": "comparison", "date": "date", "comment": "comment",
    "findings and impression": "impression", "wet read": "wet read", "comparison film": "comparison",
    "recommendations": "recommendations", "findings/impression": "impression", "pfi": "history",
    "recommendation": "recommendations", "wetread": "wet read", "ndication": "indication",
    "impresson": "impression", "imprression": "impression", "imoression": "impression",
    "impressoin": "impression", "imprssion": "impression", "impresion": "impression",
    "imperssion": "impression", "mpression": "impression", "impession": "impression",
    "findings/ impression": "impression", "finding": "findings", "findins": "findings",
    "findindgs": "findings", "findgings": "findings", "findngs": "findings", "findnings": "findings",
    "finidngs": "findings", "idication": "indication", "reference findings": "findings",
    "comparision": "comparison", "comparsion": "comparison", "comparrison": "comparison",
    "comparisions": "comparison",
}
#: A name containing one of these words becomes that word (checked in this order).
MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
#: A name that looks like the title of a chest view describes the study: treated as findings.
FINDINGS_LIKE = re.compile(
    "(chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views|"
    "frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright|"
    "ribs|pa and lat)")


@dataclass(frozen=True)
class MimicSection:
    """One section: normalised name, raw header as written, body text and its start offset."""

    name: str
    header: str
    text: str
    start: int


def normalize_section_name(raw: str) -> str:
    """Map a raw header (any case) to the official parser's normalised section name."""
    name = raw.lower().strip()
    if name in SECTION_NAME_MAP:
        return SECTION_NAME_MAP[name]
    for main in MAIN_SECTIONS:
        if main in name:
            return main
    return "findings" if FINDINGS_LIKE.search(name) else name


def split_sections(text: str) -> list[MimicSection]:
    """Split a MIMIC-CXR report into named sections (the official ``section_text`` rules)."""
    sections: list[MimicSection] = []
    match = HEADER.search(text, 0)
    if match is None:
        sections.append(MimicSection("full report", "", text, 0))
    else:
        sections.append(MimicSection("preamble", "", text[: match.start(1)], 0))
        while match is not None:
            header = match.group(1)
            start = match.end()
            skip = text[start:].find("\n")
            # Skip past the first newline after a header: a header's own line cannot start another one.
            match = HEADER.search(text, start + (skip if skip != -1 else 0))
            end = len(text) if match is None else match.start()
            sections.append(MimicSection(normalize_section_name(header), header, text[start:end], start))
    sections = [s for s in sections if not (s.name in ("impression", "findings") and not s.text.strip())]
    names = {s.name for s in sections}
    if "impression" not in names and "findings" not in names and "\n \n" in sections[-1].text:
        last = sections[-1]
        first, *rest = last.text.split("\n \n")
        sections[-1] = MimicSection(last.name, last.header, first, last.start)
        sections.append(MimicSection("last_paragraph", "", "\n \n".join(rest), last.start + len(first)))
    return sections


def last_section(sections: list[MimicSection], name: str) -> str | None:
    """The stripped text of the last section called ``name`` (the official CSV keeps the last), or None."""
    for section in reversed(sections):
        if section.name == name and section.text.strip():
            return section.text.strip()
    return None


def mimic_report_sections(text: str) -> ReportSections:
    """FINDINGS and IMPRESSION of a MIMIC-CXR report; ``full_text`` holds the fallback text.

    When neither section exists, ``full_text`` is the ``last_paragraph``, else the last non-empty
    non-preamble section, else the whole report, so the composed text never starts with the
    ``FINAL REPORT`` / ``EXAMINATION`` boilerplate when something better exists.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sections = split_sections(text)
    findings = last_section(sections, "findings")
    impression = last_section(sections, "impression")
    if findings or impression:
        return ReportSections(findings=findings, impression=impression, full_text=text)
    fallback = last_section(sections, "last_paragraph")
    if fallback is None:
        fallback = next((s.text.strip() for s in reversed(sections)
                         if s.name != "preamble" and s.text.strip()), text.strip())
    return ReportSections(findings=None, impression=None, full_text=fallback)
