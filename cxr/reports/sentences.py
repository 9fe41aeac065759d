"""Reports as sections of sentences: parse ``[FINDINGS]``/``[IMPRESSION]``-tagged text, edit, render back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cxr.reports.compose import SECTION_TAG_PATTERN, SECTION_TAGS

#: Sentence boundary: whitespace after terminal punctuation (the authors' split).
SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` on ``(?<=[.!?])\\s+``; empty pieces are dropped."""
    return [s for s in (p.strip() for p in SENTENCE_BOUNDARY.split(text.strip())) if s]


@dataclass
class SentenceSection:
    """One report section: its tag (None for untagged text) and its sentences."""

    tag: str | None
    sentences: list[str] = field(default_factory=list)


def parse_sections(text: str) -> list[SentenceSection]:
    """Split a (possibly tagged) report into sections of sentences; untagged text is one section."""
    sections: list[SentenceSection] = []
    current = SentenceSection(tag=None)
    for piece in SECTION_TAG_PATTERN.split(text):
        if piece in SECTION_TAGS:
            if current.tag is not None or current.sentences:
                sections.append(current)
            current = SentenceSection(tag=piece)
        elif piece.strip():
            current.sentences.extend(split_sentences(piece))
    if current.tag is not None or current.sentences:
        sections.append(current)
    return sections


def render_sections(sections: list[SentenceSection]) -> str:
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


def sentence_positions(sections: list[SentenceSection]) -> list[tuple[int, int]]:
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
