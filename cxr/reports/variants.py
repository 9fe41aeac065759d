"""Rule-based, deterministic report variants (clinically equivalent or sub-reports), paper §B.

Every variant function has the signature ``(text, rng) -> str | None`` and returns None when it does not
apply to ``text`` (for example omission on a one-sentence report). :func:`make_variants` tags results
with their :class:`VariantKind`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from cxr.reports.abbreviations import contract_abbreviations, expand_abbreviations
from cxr.reports.anatomy import AnatomicalRegion, classify_sentence
from cxr.reports.fact_parser import parse_sentence
from cxr.reports.facts import NO_FINDING, Presence
from cxr.reports.sentences import (
    all_sentences,
    parse_sections,
    render_sections,
    sentence_positions,
    strip_marker,
)
from cxr.reports.shuffle import shuffle_sentences


class VariantKind(str, Enum):
    """How a report variant was made."""

    SENTENCE_SPLIT = "sentence_split"
    OMISSION = "omission"
    ANATOMICAL_PARTITION = "anatomical_partition"
    ABBREVIATION_EXPANSION = "abbreviation_expansion"
    ABBREVIATION_CONTRACTION = "abbreviation_contraction"
    SENTENCE_SHUFFLE = "sentence_shuffle"
    PARAPHRASE = "paraphrase"  # LLM-made (cxr.data.pairs.paraphrase), never produced by the rules here


@dataclass(frozen=True)
class ReportVariant:
    """A variant text and the kind of transformation that produced it."""

    text: str
    kind: VariantKind


# Words that make an unparsed sentence clinically relevant: findings, devices, sizes and change over time ("Stable
# appearance of the chest", "Degenerative changes of the spine"). Sides are absent: "clear bilaterally" is normal.
_CLINICAL = re.compile(
    r"\b(?:new|increas|decreas|wors|improv|stable|unchanged|persist|again|re-?demonstrat|progress|enlarg|resolv|"
    r"opacit|effusion|pneumothora|consolidat|atelecta|edema|congest|nodul|mass|lesion|fractur|granulom|calcifi|"
    r"scar|emphysem|hyperinfla|hyperexpan|elevat|blunt|thicken|deformit|scoliosis|kyphosis|degenerat|osteophyt|"
    r"hernia|tortu|atheroscl|cardiomegaly|widen|infiltrat|pneumonia|collapse|fibrosis|cyst|cavit|bronchiect|"
    r"interstitial|prominen|tube|line|catheter|picc|pacer|pacemaker|lead|wire|clip|stent|device|drain|port|valve|"
    r"hardware|sternotomy|suture|small|large|mild|moderate|severe|minimal|trace|tiny|\d+(?:\.\d+)?\s*(?:mm|cm))",
    re.IGNORECASE)
# Positive evidence that a sentence without facts is a normal statement or a technique / comparison note.
_NORMAL_OR_TECHNIQUE = re.compile(
    r"\b(?:clear|normal|unremarkable|intact|within normal limits|none|no acute|no (?:significant |relevant )?"
    r"(?:interval )?change|comparison|compared|views?|radiograph|portable|technique|discussed|communicated|"
    r"notified|telephone|obtained)\b", re.IGNORECASE)


def is_noncritical(sentence: str) -> bool:
    """Whether omitting ``sentence`` loses no positive or uncertain finding (the omission rule).

    Only normal and negative statements may be omitted: a sentence whose facts
    (:func:`cxr.reports.fact_parser.parse_sentence`) are all denials or normal-study statements, or a sentence
    without facts that reads as normal / technique / comparison. A sentence stating any present or hedged finding
    or device — "Stable marked cardiomegaly.", "Effusion is again seen." — is never omitted, and neither is one
    with clinical words the fact reader does not account for ("No new consolidation", "Degenerative changes").
    """
    parsed = parse_sentence(sentence)
    if any(m.fact.presence is not Presence.NEGATIVE and m.fact.subject != NO_FINDING for m in parsed.mentions):
        return False
    spans = [m.subject for m in parsed.mentions] + [m.cue for m in parsed.mentions if m.cue]
    chars = list(sentence)
    for a, b in spans:
        chars[a:b] = " " * (b - a)
    rest = "".join(chars)
    if _CLINICAL.search(rest):
        return False
    return bool(parsed.mentions) or bool(_NORMAL_OR_TECHNIQUE.search(rest))


def sentence_split(text: str, rng: random.Random) -> str | None:
    """One sentence of a multi-sentence report (a sub-report); None for single-sentence reports."""
    sentences = all_sentences(text)
    if len(sentences) < 2:
        return None
    return strip_marker(rng.choice(sentences))  # a sentence taken out of a list loses its "2." / "-"


def omit_sentences(text: str, rng: random.Random) -> str | None:
    """Drop a random non-empty subset of the normal/negative sentences (:func:`is_noncritical`), keeping at least
    one sentence: every positive or uncertain finding of the report survives.

    Section tags are kept for sections that still have sentences; numbered lists are renumbered. None when
    nothing can be dropped.
    """
    sections = parse_sections(text)
    positions = sentence_positions(sections)
    droppable = [p for p in positions if is_noncritical(sections[p[0]].sentences[p[1]])]
    if len(positions) < 2 or not droppable:
        return None
    max_drop = min(len(droppable), len(positions) - 1)
    drop = set(rng.sample(droppable, rng.randint(1, max_drop)))
    for i, sec in enumerate(sections):
        sec.sentences = [s for j, s in enumerate(sec.sentences) if (i, j) not in drop]
    return render_sections(sections)


def partition_by_region(text: str) -> dict[AnatomicalRegion, list[str]]:
    """Sentences grouped by anatomical region, in report order (regions without sentences absent)."""
    groups: dict[AnatomicalRegion, list[str]] = {}
    for sentence in all_sentences(text):
        groups.setdefault(classify_sentence(sentence), []).append(sentence)
    return groups


def anatomical_partition(text: str, rng: random.Random) -> str | None:
    """The sentences about one randomly chosen anatomical region.

    Needs at least two distinct (non-OTHER) regions, so the result is a real part of the report.
    """
    groups = {r: s for r, s in partition_by_region(text).items() if r is not AnatomicalRegion.OTHER}
    if len(groups) < 2:
        return None
    region = rng.choice(sorted(groups, key=lambda r: r.value))
    return " ".join(strip_marker(s) for s in groups[region])


def abbreviation_expansion(text: str, rng: random.Random) -> str | None:
    """Every abbreviation expanded (see :mod:`cxr.reports.abbreviations`)."""
    return expand_abbreviations(text, rng)


def abbreviation_contraction(text: str, rng: random.Random) -> str | None:
    """Some expanded terms contracted to their abbreviation."""
    return contract_abbreviations(text, rng)


def sentence_shuffle(text: str, rng: random.Random) -> str | None:
    """Sentences shuffled inside each section; None when no order change is possible or it came out equal."""
    if max((len(s.sentences) for s in parse_sections(text)), default=0) < 2:
        return None
    for _ in range(5):  # a shuffle can return the original order; retry a few times
        out = shuffle_sentences(text, rng, sectioned=True)
        if out != render_sections(parse_sections(text)):
            return out
    return None


VARIANT_FUNCTIONS: dict[VariantKind, Callable[[str, random.Random], str | None]] = {
    VariantKind.SENTENCE_SPLIT: sentence_split,
    VariantKind.OMISSION: omit_sentences,
    VariantKind.ANATOMICAL_PARTITION: anatomical_partition,
    VariantKind.ABBREVIATION_EXPANSION: abbreviation_expansion,
    VariantKind.ABBREVIATION_CONTRACTION: abbreviation_contraction,
    VariantKind.SENTENCE_SHUFFLE: sentence_shuffle,
}


def make_variants(text: str, rng: random.Random,
                  kinds: Sequence[VariantKind] | None = None) -> list[ReportVariant]:
    """Apply each requested kind (default: all rule-based kinds) and keep those that apply and differ."""
    out: list[ReportVariant] = []
    for kind in kinds or list(VARIANT_FUNCTIONS):
        if kind not in VARIANT_FUNCTIONS:
            raise ValueError(f"variant kind {kind.value!r} is not rule-based (use cxr.data.pairs.paraphrase)")
        result = VARIANT_FUNCTIONS[kind](text, rng)
        if result is not None and result.strip() and result != text:
            out.append(ReportVariant(result, kind))
    return out
