"""Compose the text given to the text tower from a study's report sections."""

from __future__ import annotations

import re

from cxr.data.records import ReportSections

FINDINGS_TAG = "[FINDINGS]"
IMPRESSION_TAG = "[IMPRESSION]"
_WS = re.compile(r"\s+")


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace (MIMIC reports wrap lines at 79 characters)."""
    return _WS.sub(" ", text).strip()


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
