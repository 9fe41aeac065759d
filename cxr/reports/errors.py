"""Error injection: minimal, clinically meaningful edits that make hard negatives (paper §B.3).

Each function ``(text, rng) -> str | None`` makes exactly one kind of error in one place (one word or one
sentence) and returns None when the report offers nothing to corrupt. :func:`inject_error` picks a kind.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from cxr.reports.sentences import (
    capitalize_first,
    match_case,
    parse_sections,
    render_sections,
    sentence_positions,
)


class ErrorKind(str, Enum):
    """The kind of injected error (a subset of the authors' error categories)."""

    LATERALITY_SWAP = "laterality_swap"
    NEGATION_FLIP = "negation_flip"
    SEVERITY_CHANGE = "severity_change"
    DEVICE_CHANGE = "device_change"
    DEVICE_POSITION = "device_position"


@dataclass(frozen=True)
class InjectedError:
    """An error-injected report and the kind of error it carries."""

    text: str
    kind: ErrorKind


def _swap_words(text: str, table: dict[str, str], rng: random.Random, flags: int = re.IGNORECASE) -> str | None:
    """Replace ONE randomly chosen occurrence of any key of ``table`` by its value, matching case."""
    pattern = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(
        re.escape(k).replace(r"\ ", r"\s+") for k in sorted(table, key=len, reverse=True)) + r")(?![A-Za-z0-9])",
        flags)
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    m = rng.choice(matches)
    found = m.group(0)
    key = re.sub(r"\s+", " ", found.lower())
    replacement = table.get(key) or table[next(k for k in table if k.lower() == key)]
    # Abbreviations (all caps in the table) keep their own case.
    new = replacement if replacement.isupper() else match_case(replacement, found)
    return text[:m.start()] + new + text[m.end():]


# -- laterality ----------------------------------------------------------------------------------------------
_SIDE = re.compile(r"\b(?:left|right)\b", re.IGNORECASE)
_SIDE_ABBREV = {"RLL": "LLL", "LLL": "RLL", "RUL": "LUL", "LUL": "RUL", "RULF": "LULF", "LULF": "RULF",
                "RLLF": "LLLF", "LLLF": "RLLF"}
_SIDE_ABBREV_RE = re.compile(r"\b(?:" + "|".join(_SIDE_ABBREV) + r")\b")


def _swap_side(m: re.Match[str]) -> str:
    word = m.group(0)
    return match_case("right" if word.lower() == "left" else "left", word)


def laterality_swap(text: str, rng: random.Random) -> str | None:
    """Swap left↔right (and RLL↔LLL, RUL↔LUL) in one sentence that names a single side.

    Sentences naming both sides are skipped: swapping them would not change the meaning.
    """
    sections = parse_sections(text)
    candidates = []
    for i, j in sentence_positions(sections):
        s = sections[i].sentences[j]
        sides = {w.lower() for w in _SIDE.findall(s)} | {a[0] for a in _SIDE_ABBREV_RE.findall(s)}
        sides = {"left" if x in ("left", "L") else "right" for x in sides}
        if len(sides) == 1:
            candidates.append((i, j))
    if not candidates:
        return None
    i, j = rng.choice(candidates)
    s = _SIDE.sub(_swap_side, sections[i].sentences[j])
    sections[i].sentences[j] = _SIDE_ABBREV_RE.sub(lambda m: _SIDE_ABBREV[m.group(0)], s)
    return render_sections(sections)


# -- negation ------------------------------------------------------------------------------------------------
# Negated → affirmed rewrites, tried in order; the first that matches the sentence is applied once.
_UNNEGATE: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"\bno (?:definite |convincing )?evidence of\b", "evidence of"),
    (r"\bthere is no\b", "there is"),
    (r"\bthere are no\b", "there are"),
    (r"\bwithout\b", "with"),
    (r"\b(is|are) not (seen|identified|present|visualized|evident)\b", r"\1 \2"),
    (r"\bnegative for\b", "positive for"),
    (r"^no\s+", ""),
    (r"\bno\s+", ""),
))
# Affirmed → negated rewrites.
_NEGATE: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"\bthere (is|are) (?:an? )?", r"there \1 no "),
    (r"\b(is|are) (seen|noted|present|identified|visualized)\b", r"\1 not \2"),
    (r"\bevidence of\b", "no evidence of"),
))
_NEGATED = re.compile(r"\b(?:no|not|without|negative for)\b", re.IGNORECASE)
_FINDING_WORDS = re.compile(
    r"\b(?:effusion|pneumothora\w*|opacit\w*|consolidation|atelectasis|edema|pneumonia|cardiomegaly|nodule|"
    r"mass|fracture|infiltrat\w*|congestion|enlarge\w*|ptx|ggo|pleff)\b", re.IGNORECASE)


def _rewrite(sentence: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, repl in rules:
        if pattern.search(sentence):
            return capitalize_first(pattern.sub(repl, sentence, count=1))
    return None


def negation_flip(text: str, rng: random.Random) -> str | None:
    """Turn one negated finding into an affirmed one ("No pneumothorax." → "Pneumothorax.") or vice versa.

    Only sentences that mention a finding word are candidates, so "No interval change." is never touched.
    """
    sections = parse_sections(text)
    options = []
    for i, j in sentence_positions(sections):
        s = sections[i].sentences[j]
        if not _FINDING_WORDS.search(s):
            continue
        if _NEGATED.search(s):
            new = _rewrite(s, _UNNEGATE)
        else:
            # fall back to prefixing "No": "Small left effusion." → "No small left effusion."
            new = _rewrite(s, _NEGATE) or "No " + (s[0].lower() + s[1:] if not s.split()[0].isupper() else s)
        if new and new != s:
            options.append((i, j, new))
    if not options:
        return None
    i, j, new = rng.choice(options)
    sections[i].sentences[j] = new
    return render_sections(sections)


# -- severity ------------------------------------------------------------------------------------------------
SEVERITY_SWAPS: dict[str, str] = {
    "small": "large", "large": "small", "tiny": "large", "trace": "large",
    "mild": "severe", "severe": "mild", "moderate": "severe", "minimal": "extensive", "extensive": "minimal",
    "mildly": "severely", "severely": "mildly", "moderately": "severely", "slightly": "markedly",
    "markedly": "slightly", "marked": "mild",
    "increased": "decreased", "decreased": "increased", "increasing": "decreasing", "decreasing": "increasing",
    "improved": "worsened", "worsened": "improved", "improving": "worsening", "worsening": "improving",
}


def severity_change(text: str, rng: random.Random) -> str | None:
    """Swap one severity/size/trend word (small↔large, mild↔severe, improved↔worsened, ...)."""
    return _swap_words(text, SEVERITY_SWAPS, rng)


# -- devices -------------------------------------------------------------------------------------------------
DEVICE_SWAPS: dict[str, str] = {
    "endotracheal tube": "nasogastric tube", "nasogastric tube": "endotracheal tube",
    "enteric tube": "endotracheal tube", "feeding tube": "endotracheal tube",
    "ET tube": "NG tube", "NG tube": "ET tube", "ETT": "NGT", "NGT": "ETT",
    "PICC": "CVC", "central venous catheter": "PICC line", "pacemaker": "defibrillator",
}
POSITION_SWAPS: dict[str, str] = {
    "above the carina": "below the carina", "below the carina": "above the carina",
    "in the stomach": "in the esophagus", "in the esophagus": "in the stomach",
    "in the right atrium": "in the superior vena cava", "in the superior vena cava": "in the right atrium",
    "in the SVC": "in the right atrium", "at the cavoatrial junction": "in the right atrium",
    "in standard position": "malpositioned", "in appropriate position": "malpositioned",
    "in good position": "malpositioned", "in satisfactory position": "malpositioned",
    "appropriately positioned": "malpositioned", "well positioned": "malpositioned",
    "malpositioned": "in standard position",
    "in the right mainstem bronchus": "above the carina",
}


def device_change(text: str, rng: random.Random) -> str | None:
    """Rename one device (endotracheal ↔ nasogastric tube, ETT ↔ NGT, PICC ↔ CVC, ...)."""
    return _swap_words(text, DEVICE_SWAPS, rng)


def device_position(text: str, rng: random.Random) -> str | None:
    """Change one device position phrase (above ↔ below the carina, stomach ↔ esophagus, ...)."""
    return _swap_words(text, POSITION_SWAPS, rng)


ERROR_FUNCTIONS: dict[ErrorKind, Callable[[str, random.Random], str | None]] = {
    ErrorKind.LATERALITY_SWAP: laterality_swap,
    ErrorKind.NEGATION_FLIP: negation_flip,
    ErrorKind.SEVERITY_CHANGE: severity_change,
    ErrorKind.DEVICE_CHANGE: device_change,
    ErrorKind.DEVICE_POSITION: device_position,
}


def applicable_errors(text: str, rng: random.Random,
                      kinds: Sequence[ErrorKind] | None = None) -> list[InjectedError]:
    """Every requested error kind that applies to ``text`` (one corrupted text per kind)."""
    out = []
    for kind in kinds or list(ERROR_FUNCTIONS):
        result = ERROR_FUNCTIONS[kind](text, rng)
        if result is not None and result != text:
            out.append(InjectedError(result, kind))
    return out


def inject_error(text: str, rng: random.Random, kinds: Sequence[ErrorKind] | None = None) -> InjectedError | None:
    """One error of a randomly chosen applicable kind; None when no kind applies."""
    options = applicable_errors(text, rng, kinds)
    return rng.choice(options) if options else None
