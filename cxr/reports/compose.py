"""Compose the text given to the text tower from a study's report sections.

The one owner of the section tags (``[FINDINGS]``/``[IMPRESSION]``, as in the authors' captions) and the regex
that finds them; every other module imports them from here.
"""

from __future__ import annotations

import re

from cxr.records import ReportSections, stable_id

FINDINGS_TAG = "[FINDINGS]"
IMPRESSION_TAG = "[IMPRESSION]"
SECTION_TAGS = (FINDINGS_TAG, IMPRESSION_TAG)
#: Splits tagged text on the tags; the capture group keeps each tag as its own piece.
SECTION_TAG_PATTERN = re.compile("(" + "|".join(re.escape(t) for t in SECTION_TAGS) + ")")
_WS = re.compile(r"\s+")
#: Zero-width and other invisible format characters (copy-paste from web forms and PDFs leaves them behind).
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
#: De-identification marks: MIMIC ``___``, Open-I ``XXXX``, MIMIC-II ``[**...**]``.
_DEID = re.compile(r"_{2,}|\bX{2,}\b|\[\*\*.*?\*\*\]")
#: A section header: an upper-case label ending in a colon (``IMPRESSION:``, ``FINDINGS AND IMPRESSION:``),
#: the section tags, or MIMIC's ``FINAL REPORT`` line.
_HEADER = re.compile(r"\b[A-Z][A-Z /&()-]{0,60}:|\[(?:FINDINGS|IMPRESSION)\]|\bFINAL REPORT\b")
#: A whole report that is only a placeholder word.
_PLACEHOLDERS = frozenset({"n/a", "na", "nan", "none", "null", "nil", "tbd"})
CONTENT_FREE = ("report has no clinical content: only de-identification marks, punctuation, a section header "
                "or invisible characters")


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace (MIMIC reports wrap lines at 79 characters) and drop zero-width characters
    (so a report pasted with a ZWSP shares its text id with the clean copy)."""
    return _WS.sub(" ", text.translate(_INVISIBLE)).strip()


def has_content(text: str | None) -> bool:
    """Whether ``text`` says anything: some letter left once de-identification marks (``___``, ``XXXX``),
    section headers alone (``IMPRESSION:``), punctuation, invisible characters and placeholder words
    (``N/A``, ``none``) are set aside. ``___``, ``.``, ``IMPRESSION:`` and a zero-width space have none."""
    if not text:
        return False
    rest = _HEADER.sub(" ", _DEID.sub(" ", text.translate(_INVISIBLE)))
    words = re.sub(r"[^\w/]+", " ", rest).strip().lower()
    if words in _PLACEHOLDERS:
        return False
    return any(ch.isalpha() for ch in words)


def empty_report_reason(report: ReportSections) -> str | None:
    """Why ``report`` cannot be a training target (no text at all, or no content), or None if it can."""
    if report.is_empty:
        return "report has no findings, impression or text"
    if not any(has_content(part) for part in (report.findings, report.impression, report.full_text)):
        return CONTENT_FREE
    return None


def text_id(text: str) -> int:
    """Stable id of a report text (whitespace-normalised, case kept): identical texts share it."""
    return stable_id(normalize_whitespace(text))


def compose_report_text(report: ReportSections, tagged: bool = True) -> str:
    """FINDINGS + IMPRESSION, falling back to whichever exists, then to the full text.

    With ``tagged`` the sections carry ``[FINDINGS]`` / ``[IMPRESSION]`` tags as in the authors' captions.
    A section without content (:func:`has_content`: ``___``, ``.``, a header alone) is left out. Raises
    ``ValueError`` when nothing with content is left (never returns an empty or content-free string).
    """
    parts = []
    if has_content(report.findings):
        body = normalize_whitespace(report.findings)
        parts.append(f"{FINDINGS_TAG} {body}" if tagged else body)
    if has_content(report.impression):
        body = normalize_whitespace(report.impression)
        parts.append(f"{IMPRESSION_TAG} {body}" if tagged else body)
    if not parts:
        if not has_content(report.full_text):
            raise ValueError(empty_report_reason(report) or CONTENT_FREE)
        parts.append(normalize_whitespace(report.full_text))
    return " ".join(parts)
