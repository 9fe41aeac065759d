"""Radiology abbreviation lexicon with expansion and contraction (report variants, paper §B.1).

Matching is case-insensitive, tolerates dotted spellings (``C.X.R.``) and is word-boundary safe: ``PA`` never
matches inside ``PAIN``, ``b/l`` needs a non-word, non-slash neighbour on both sides.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from cxr.reports.sentences import capitalize_first


@dataclass(frozen=True)
class Abbreviation:
    """One lexicon entry: the canonical short form, its expansion, and accepted alternative spellings."""

    short: str
    expansion: str
    short_aliases: tuple[str, ...] = ()
    long_aliases: tuple[str, ...] = ()


#: The lexicon. COPD and similar universally known forms are deliberately absent (the authors' prompt keeps them).
LEXICON: tuple[Abbreviation, ...] = (
    Abbreviation("PTX", "pneumothorax", long_aliases=("pneumothoraces",)),
    Abbreviation("b/l", "bilateral", short_aliases=("B/L", "bilat")),
    Abbreviation("CXR", "chest X-ray", long_aliases=("chest x-ray", "chest radiograph")),
    Abbreviation("ETT", "endotracheal tube", short_aliases=("ET tube",)),
    Abbreviation("NGT", "nasogastric tube", short_aliases=("NG tube",)),
    Abbreviation("CHF", "congestive heart failure"),
    Abbreviation("RLL", "right lower lobe"),
    Abbreviation("RML", "right middle lobe"),
    Abbreviation("RUL", "right upper lobe"),
    Abbreviation("LLL", "left lower lobe"),
    Abbreviation("LUL", "left upper lobe"),
    Abbreviation("RULF", "right upper lung field"),
    Abbreviation("RLLF", "right lower lung field"),
    Abbreviation("LULF", "left upper lung field"),
    Abbreviation("LLLF", "left lower lung field"),
    Abbreviation("BLLF", "bilateral lower lung fields"),
    Abbreviation("PLEFF", "pleural effusion", long_aliases=("pleural effusions",)),
    Abbreviation("GGO", "ground-glass opacity", short_aliases=("GGOs",),
                 long_aliases=("ground-glass opacities", "ground glass opacity", "ground glass opacities")),
    Abbreviation("CP angle", "costophrenic angle", long_aliases=("costophrenic angles",)),
    Abbreviation("AP", "anteroposterior"),
    Abbreviation("PA", "posteroanterior"),
    Abbreviation("IJ", "internal jugular"),
    Abbreviation("SVC", "superior vena cava"),
    Abbreviation("PICC", "peripherally inserted central catheter"),
    Abbreviation("CVC", "central venous catheter"),
    Abbreviation("CABG", "coronary artery bypass graft"),
    Abbreviation("s/p", "status post", short_aliases=("S/P",)),
    Abbreviation("r/o", "rule out", short_aliases=("R/O",)),
)

_LEFT = r"(?<![A-Za-z0-9/])"
_RIGHT = r"(?![A-Za-z0-9/])"
# A match counts as sentence-initial after the start, terminal punctuation or a section tag.
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|\]\s*)$")


_SENTENCE_END_AFTER = re.compile(r"\s*$|\s+(?:[A-Z]|\[)")


def _short_pattern(form: str) -> str:
    alts = [re.escape(form).replace(r"\ ", r"\s+")]
    if form.isalpha() and form.isupper() and len(form) > 1:
        # dotted spelling: C.X.R. (the final dot optional, it may double as the full stop)
        alts.append(r"\.".join(re.escape(c) for c in form) + r"\.?")
    return "|".join(alts)


def _compile(forms: list[str], short: bool) -> re.Pattern[str]:
    ordered = sorted(forms, key=len, reverse=True)  # longest first: "ET tube" before "ET"
    body = "|".join(_short_pattern(f) if short else re.escape(f).replace(r"\ ", r"\s+") for f in ordered)
    return re.compile(f"{_LEFT}(?:{body}){_RIGHT}", re.IGNORECASE)


_SHORT_RE = {e.short: _compile([e.short, *e.short_aliases], short=True) for e in LEXICON}
_LONG_RE = {e.short: _compile([e.expansion, *e.long_aliases], short=False) for e in LEXICON}


def _at_sentence_start(text: str, pos: int) -> bool:
    return bool(_SENTENCE_START.search(text[:pos]))


def _replace(text: str, pattern: re.Pattern[str], make: Callable[[re.Match[str], bool], str]) -> str:
    out: list[str] = []
    last = 0
    for m in pattern.finditer(text):
        out.append(text[last:m.start()])
        out.append(make(m, _at_sentence_start(text, m.start())))
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def find_abbreviations(text: str) -> list[Abbreviation]:
    """Lexicon entries whose short form occurs in ``text``."""
    return [e for e in LEXICON if _SHORT_RE[e.short].search(text)]


def find_expansions(text: str) -> list[Abbreviation]:
    """Lexicon entries whose long form occurs in ``text``."""
    return [e for e in LEXICON if _LONG_RE[e.short].search(text)]


def expand_abbreviations(text: str, rng: random.Random | None = None) -> str | None:
    """Replace every known abbreviation by its expansion; None when the text has none.

    Deterministic (``rng`` is accepted for the common variant signature). Sentence-initial expansions are
    capitalised; a dotted abbreviation's final dot is kept when it also ended the sentence.
    """
    entries = find_abbreviations(text)
    if not entries:
        return None
    for e in entries:
        def make(m: re.Match[str], initial: bool, e: Abbreviation = e, text: str = text) -> str:
            word = capitalize_first(e.expansion) if initial else e.expansion
            matched = m.group(0)
            ends_sentence = bool(_SENTENCE_END_AFTER.match(text, m.end()))
            if matched.endswith(".") and "." in matched[:-1] and ends_sentence:
                word += "."
            return word
        text = _replace(text, _SHORT_RE[e.short], make)
    return text


def contract_abbreviations(text: str, rng: random.Random) -> str | None:
    """Replace a random non-empty subset of expanded terms by their abbreviation; None when none occur."""
    entries = find_expansions(text)
    if not entries:
        return None
    k = rng.randint(1, len(entries))
    chosen = rng.sample(entries, k)
    # Longest expansions first so "right lower lobe" is not pre-empted by a shorter overlapping entry.
    for e in sorted(chosen, key=lambda x: len(x.expansion), reverse=True):
        def make(m: re.Match[str], initial: bool, e: Abbreviation = e) -> str:
            return e.short.upper() if initial and e.short[:1].islower() else e.short
        text = _replace(text, _LONG_RE[e.short], make)
    return text
