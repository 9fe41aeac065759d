"""Reports as sections of sentences: parse ``[FINDINGS]``/``[IMPRESSION]``-tagged text, edit, render back."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cxr.reports.compose import SECTION_TAG_PATTERN, SECTION_TAGS

#: Sentence boundary candidates: a run of terminal punctuation after a non-space character, then whitespace (the
#: authors' ``(?<=[.!?])\s+``, minus a leading "?" hedge: "? RLL PNA" is one sentence).
SENTENCE_BOUNDARY = re.compile(r"(?<=\S)[.!?]+(?=\s)")
#: Words whose trailing dot does not end a sentence ("Dr. ___", "vs.").
ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "st", "fig"})
_NUMBERED = re.compile(r"(?:(?<=^)|(?<=\s))(\d{1,2})([.)])(?=\s+\S)")
_BULLET = re.compile(r"(?:(?<=^)|(?<=\s))([-*\u2022])(?=\s+\S)")
#: A list marker at the start of a sentence ("1. ", "2) ", "- ", "* ").
LIST_MARKER = re.compile(r"^(?:\d{1,2}[.)]|[-*\u2022])\s+")
_NUMBER_PREFIX = re.compile(r"^(\d{1,2})([.)])(\s+)")
_LETTER = re.compile(r"[^\W\d_]")
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def _numbered_markers(text: str) -> list[tuple[int, int]]:
    """Spans of "1." "2." ... (or "1)" "2)" ...) that number a list 1, 2, 3, ... in text order."""
    best: list[tuple[int, int]] = []
    for closer in (".", ")"):
        chain, expected = [], 1
        for m in _NUMBERED.finditer(text):
            if m.group(2) == closer and int(m.group(1)) == expected:
                chain.append(m.span())
                expected += 1
        best = chain if len(chain) > len(best) else best
    return best


def list_markers(text: str) -> list[tuple[int, int]]:
    """Spans of the list markers in ``text``: a numbered list 1, 2, 3, ... or bullets ("-", "*") that start the
    text or follow terminal punctuation or a colon (a dash inside a sentence is punctuation, not a bullet)."""
    bullets = []
    for m in _BULLET.finditer(text):
        before = text[:m.start()].rstrip()
        if not before or before[-1] in ".!?:" or text.lstrip().startswith(m.group(1) + " "):
            bullets.append(m.span())
    return sorted(_numbered_markers(text) + bullets)


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences; a list item's marker stays with the item's first sentence.

    Sentences end at terminal punctuation followed by whitespace (the authors' split), except after
    :data:`ABBREVIATIONS` and inside list markers; a list marker ("1.", "2)", "- ") also starts a new sentence, so
    numbered items without a closing period ("1. Cardiomegaly 2. No effusion") still come apart. A piece with no
    letter ("2.", "-", "...") or ending in a colon ("IMPRESSION:") is joined to the next one, so no sentence is
    only numbering or punctuation. Empty pieces are dropped.
    """
    text = text.strip()
    if not text:
        return []
    markers = list_markers(text)
    inside_marker = {i for a, b in markers for i in range(a, b)}
    cuts = {a for a, _ in markers}
    for m in SENTENCE_BOUNDARY.finditer(text):
        if m.start() in inside_marker:
            continue
        word = _WORD_BEFORE.search(text, 0, m.start())
        if m.group(0) == "." and word and word.group(1).lower().rstrip(".") in ABBREVIATIONS:
            continue
        cuts.add(m.end())
    pieces, last = [], 0
    for cut in sorted(cuts | {len(text)}):
        piece = text[last:cut].strip()
        if piece:
            pieces.append(piece)
        last = cut
    return _join_fragments(pieces)


def _join_fragments(pieces: list[str]) -> list[str]:
    """Join pieces without a letter, or ending in a colon, to the next piece (the last to the previous)."""
    out: list[str] = []
    carry = ""
    for piece in pieces:
        if not _LETTER.search(piece) or piece.endswith(":"):
            carry = f"{carry} {piece}".strip()
            continue
        out.append(f"{carry} {piece}" if carry else piece)
        carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out


def strip_marker(sentence: str) -> str:
    """``sentence`` without its list marker ("2. No effusion." → "No effusion.")."""
    return LIST_MARKER.sub("", sentence, count=1)


def renumber(sentences: list[str]) -> list[str]:
    """Numbered list markers rewritten 1, 2, 3, ... in order, so a shuffled or shortened list reads 1, 2, 3 again
    ("2. B. 1. A." → "1. B. 2. A."; "2. B. 3. C." after item 1 was omitted → "1. B. 2. C."); other sentences are
    untouched."""
    out, n = [], 1
    for s in sentences:
        m = _NUMBER_PREFIX.match(s)
        if m:
            s = f"{n}{m.group(2)}{m.group(3)}{s[m.end():]}"
            n += 1
        out.append(s)
    return out


def join_sentences(sentences: list[str]) -> str:
    """Sentences joined with single spaces, numbered list items renumbered in order."""
    return " ".join(renumber(sentences))


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
    """Join sections back into text (numbered items renumbered); sections left without sentences are dropped
    with their tag."""
    parts: list[str] = []
    for sec in sections:
        if not sec.sentences:
            continue
        body = join_sentences(sec.sentences)
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
