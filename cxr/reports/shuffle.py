"""Section-aware sentence shuffling (the one rule-based online text augmentation, paper §B.4)."""

from __future__ import annotations

import random

from cxr.reports.compose import SECTION_TAG_PATTERN, SECTION_TAGS
from cxr.reports.sentences import join_sentences, split_sentences


def _shuffle_body(body: str, rng: random.Random) -> str:
    stripped = body.strip()
    # Optional braces around a section body ("[FINDINGS] {...}") are kept around the shuffled sentences.
    braced = len(stripped) >= 2 and stripped[0] == "{" and stripped[-1] == "}"
    inner = stripped[1:-1] if braced else stripped
    sentences = split_sentences(inner)
    rng.shuffle(sentences)
    joined = join_sentences(sentences)  # a shuffled numbered list is renumbered 1, 2, 3
    return "{" + joined + "}" if braced else joined


def shuffle_sentences(text: str, rng: random.Random, sectioned: bool = True) -> str:
    """Shuffle the sentences of a report.

    With ``sectioned`` and ``[FINDINGS]``/``[IMPRESSION]`` tags present, sentences are shuffled
    independently inside each section; tags and the order of sections are kept (sentences never cross a
    section). Otherwise the whole text is shuffled as one list. Whitespace is normalised to single spaces.
    """
    if sectioned and any(tag in text for tag in SECTION_TAGS):
        pieces = SECTION_TAG_PATTERN.split(text)
        out: list[str] = []
        for piece in pieces:
            if piece in SECTION_TAGS:
                out.append(piece)
            elif piece.strip():
                out.append(_shuffle_body(piece, rng))
        return " ".join(out)
    return _shuffle_body(text, rng)
