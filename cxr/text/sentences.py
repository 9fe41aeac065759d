"""Reports as sections of sentences: parse ``[FINDINGS]``/``[IMPRESSION]``-tagged text, edit, render back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cxr.data.report_text import FINDINGS_TAG, IMPRESSION_TAG
from cxr.text.shuffle import split_sentences

_SECTION_TAGS = re.compile(r"(\[FINDINGS\]|\[IMPRESSION\])")


@dataclass
class Section:
    """One report section: its tag (None for untagged text) and its sentences."""

    tag: str | None
    sentences: list[str] = field(default_factory=list)


def parse_sections(text: str) -> list[Section]:
    """Split a (possibly tagged) report into sections of sentences; untagged text is one section."""
    sections: list[Section] = []
    current = Section(tag=None)
    for piece in _SECTION_TAGS.split(text):
        if piece in (FINDINGS_TAG, IMPRESSION_TAG):
            if current.tag is not None or current.sentences:
                sections.append(current)
            current = Section(tag=piece)
        elif piece.strip():
            current.sentences.extend(split_sentences(piece))
    if current.tag is not None or current.sentences:
        sections.append(current)
    return sections


def render_sections(sections: list[Section]) -> str:
    """Join sections back into text; sections left without sentences are dropped with their tag."""
    parts: list[str] = []
    for sec in sections:
        if not sec.sentences:
            continue
        body = " ".join(sec.sentences)
        parts.append(f"{sec.tag} {body}" if sec.tag else body)
    return " ".join(parts)


def all_sentences(text: str) -> list[str]:
    """Every sentence of the report, in order, without section tags."""
    return [s for sec in parse_sections(text) for s in sec.sentences]


def sentence_positions(sections: list[Section]) -> list[tuple[int, int]]:
    """``(section index, sentence index)`` of every sentence."""
    return [(i, j) for i, sec in enumerate(sections) for j in range(len(sec.sentences))]


def match_case(replacement: str, original: str) -> str:
    """Give ``replacement`` the case pattern of ``original`` (UPPER, Capitalised or as written)."""
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def capitalize_first(text: str) -> str:
    """Upper-case the first letter of ``text`` (leaves the rest alone, unlike ``str.capitalize``)."""
    return text[:1].upper() + text[1:]
