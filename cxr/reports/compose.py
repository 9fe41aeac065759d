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


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace (MIMIC reports wrap lines at 79 characters)."""
    return _WS.sub(" ", text).strip()


def text_id(text: str) -> int:
    """Stable id of a report text (whitespace-normalised, case kept): identical texts share it."""
    return stable_id(normalize_whitespace(text))


def compose_report_text(report: ReportSections, tagged: bool = True) -> str:
    """FINDINGS + IMPRESSION, falling back to whichever exists, then to the full text.

    With ``tagged`` the sections carry ``[FINDINGS]`` / ``[IMPRESSION]`` tags as in the authors' captions.
    Raises ``ValueError`` when the report has no text at all (never returns an empty string).
    """
    parts = []
    if report.findings and report.findings.strip():
        body = normalize_whitespace(report.findings)
        parts.append(f"{FINDINGS_TAG} {body}" if tagged else body)
    if report.impression and report.impression.strip():
        body = normalize_whitespace(report.impression)
        parts.append(f"{IMPRESSION_TAG} {body}" if tagged else body)
    if not parts:
        body = normalize_whitespace(report.full_text)
        if not body:
            raise ValueError("report has no findings, impression or text")
        parts.append(body)
    return " ".join(parts)
