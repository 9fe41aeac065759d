"""Read the clinical facts of a report sentence back from its text (a lexicon and scope rules, no model).

:func:`parse_sentence` finds subjects (CheXpert findings, normal-study statements, devices), decides each one's
presence from negation and hedge cues, and attaches the stated attributes (side, location, severity, size, trend,
device position) to the nearest subject. It also returns where everything is (character spans), which error
injection uses to edit exactly one fact.

Scope rules, in the order applied:

* A **clause** ends at ``;``, a sentence end, "but", "however", "although", "with"/"without", "which" and
  "(and) there is/are". Cues never reach across a clause boundary.
* A **pre-cue** ("no", "without", "no evidence of", "negative for", "possible", "questionable", "suspected",
  "cannot exclude", "concerning for", "may represent", a leading "?") governs every subject after it in the clause
  — so "No A, B or C" denies all three — until the next pre-cue. A **post-cue** ("is not seen", "has resolved",
  "cannot be excluded", "is not excluded", "may be") governs the subjects before it. "normal",
  "unremarkable" and "within normal limits" govern the whole clause ("Heart size and mediastinal contours are
  normal."). "consistent with" / "c/w" reset to positive.
* An attribute word attaches to the nearest subject (by characters) in its comma/"and"/"or" segment; a segment
  without a subject ("..., unchanged") gives its attributes to the previous segment's last subject.
* "heart", "heart size", "cardiac silhouette", "mediastinum" and "mediastinal contours" name Cardiomegaly /
  Enlarged Cardiomediastinum only together with a predicate in the clause ("enlarged", "widened", "normal", ...).

It is validated against the synthetic world's per-sentence truth (``tests/test_report_facts.py``): on every
sentence the realistic styles write, the parsed facts equal the facts the sentence was written with.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from cxr.reports.facts import (
    NO_FINDING,
    Attribute,
    DevicePosition,
    Fact,
    Location,
    Presence,
    Severity,
    Side,
    Trend,
)
from cxr.reports.sentences import all_sentences

Span = tuple[int, int]


def _alternation(words: Iterable[str]) -> str:
    return "|".join(sorted(words, key=len, reverse=True))


def _table(entries: dict[str, object]) -> list[tuple[re.Pattern[str], object]]:
    return [(re.compile(rf"(?<![\w/-])(?:{pattern})(?![\w/-])"), value) for pattern, value in entries.items()]


# -- lexicon (lower-case patterns, matched on the lower-cased sentence) -----------------------------------------
FINDING_SUBJECTS: dict[str, str] = {
    r"pleural effusions?|effusions?|pleff|hydrothorax": "Pleural Effusion",
    r"pneumothora(?:x|ces)|ptx": "Pneumothorax",
    r"consolidations?": "Consolidation",
    r"pneumonias?|pna": "Pneumonia",
    r"(?:airspace )?opacit(?:y|ies)|airspace disease|infiltrates?": "Lung Opacity",
    r"edema": "Edema",
    r"atelecta(?:sis|ses|tic changes?)": "Atelectasis",
    r"nodules?|masse?s?|nodular densit(?:y|ies)": "Lung Lesion",
    r"fractures?|fx": "Fracture",
    r"pleural thickening": "Pleural Other",
    r"cardiomegaly|enlarged heart": "Cardiomegaly",
    r"widened mediastinum|mediastinal widening|widening of the mediastinum": "Enlarged Cardiomediastinum",
}
#: Subjects that need a predicate in their clause ("heart size is normal", "the mediastinum is widened").
PREDICATE_SUBJECTS: dict[str, str] = {
    r"heart size|heart|cardiac silhouette|cardiac size": "Cardiomegaly",
    r"cardiomediastinal silhouette|mediastinal contours?|mediastinal silhouette|mediastinum":
        "Enlarged Cardiomediastinum",
}
_PREDICATE = re.compile(r"\b(?:enlarged|enlargement|widened|widening|normal|unremarkable|within normal limits)\b")
DEVICE_SUBJECTS: dict[str, str] = {
    r"endotracheal tube|et tube|ett": "endotracheal tube",
    r"tracheostomy(?: tube)?|trach tube": "tracheostomy tube",
    r"nasogastric tube|ng tube|ngt|enteric tube|feeding tube|orogastric tube|og tube": "nasogastric tube",
    r"(?:internal jugular|ij|subclavian)(?: central venous)? (?:catheter|line|cvc|cvl)|central venous catheter|"
    r"central line|cvc|cvl": "central venous catheter",
    r"picc(?: line)?": "PICC",
    r"(?:pacemaker|pacer)(?: leads?)?|ppm|aicd|icd|defibrillator": "pacemaker",
    r"chest tubes?|pleural drain|pigtail catheter": "chest tube",
}
NORMAL_STUDY = re.compile(
    r"(?<![\w/-])(?:no acute (?:cardiopulmonary|intrathoracic|cardiothoracic) (?:process|abnormality|disease|"
    r"findings?)|no acute (?:process|disease)|no active disease|normal chest (?:radiograph|x-ray)|normal cxr|nad)"
    r"(?![\w/-])")
#: Phrases that contain cue words but are not negations of a finding ("no interval change").
_NOT_A_CUE = re.compile(r"\bno (?:significant |relevant )?(?:interval )?change\b")
POSITIONS: dict[str, DevicePosition] = {
    r"above (?:the )?carina": DevicePosition.ABOVE_CARINA, r"below (?:the )?carina": DevicePosition.BELOW_CARINA,
    r"right mainstem(?: bronchus)?": DevicePosition.RIGHT_MAINSTEM, r"stomach": DevicePosition.STOMACH,
    r"esophagus": DevicePosition.ESOPHAGUS, r"duodenum": DevicePosition.DUODENUM,
    r"(?:mid |upper |lower )?svc|superior vena cava": DevicePosition.SVC,
    r"cavoatrial junction": DevicePosition.CAVOATRIAL, r"right atrium": DevicePosition.RIGHT_ATRIUM,
    r"right ventricle": DevicePosition.RIGHT_VENTRICLE,
    r"in (?:standard|appropriate|good|satisfactory|expected) position|in place|well[- ]positioned|"
    r"appropriately positioned": DevicePosition.STANDARD,
    r"malpositioned": DevicePosition.MALPOSITIONED,
}
SIDES: dict[str, Side] = {
    r"right|right-sided|rt": Side.RIGHT, r"left|left-sided|lt": Side.LEFT,
    r"bilateral|bilaterally|both|b/l": Side.BILATERAL,
}
LOCATIONS: dict[str, Location] = {
    r"upper lobes?|upper lungs?|upper zones?": Location.UPPER,
    r"middle lobe|mid lungs?|lingula|lingular": Location.MID,
    r"lower lobes?|lower lungs?|lower zones?": Location.LOWER,
    r"apical|apex|apices": Location.APICAL, r"basilar|basal|bases?": Location.BASAL,
    r"retrocardiac": Location.RETROCARDIAC, r"perihilar": Location.PERIHILAR,
}
#: Words that state a side and a location at once.
SIDE_LOCATIONS: dict[str, tuple[Side, Location]] = {
    "rul": (Side.RIGHT, Location.UPPER), "rml": (Side.RIGHT, Location.MID), "rll": (Side.RIGHT, Location.LOWER),
    "lul": (Side.LEFT, Location.UPPER), "lll": (Side.LEFT, Location.LOWER), "bibasilar": (Side.BILATERAL,
                                                                                         Location.BASAL),
    "lingula": (Side.LEFT, Location.MID), "lingular": (Side.LEFT, Location.MID),
}
SEVERITIES: dict[str, Severity] = {
    r"small|tiny|trace|minimal|minimally|mild|mildly|slight|slightly": Severity.SMALL,
    r"moderate|moderately": Severity.MODERATE,
    r"large|severe|severely|marked|markedly|extensive|massive": Severity.LARGE,
}
TRENDS: dict[str, Trend] = {
    r"again (?:seen|noted|demonstrated)|re-?demonstrated|unchanged|stable|persistent|persists|remains?|similar":
        Trend.STABLE,
    r"increased|increasing|worsened|worsening|enlarging|progressed": Trend.WORSE,
    r"decreased|decreasing|improved|improving|resolving|smaller": Trend.BETTER,
    r"new": Trend.NEW,
}
NEGATION_PRE = r"no evidence of|no|without|negative for|free of"
NEGATION_POST = r"(?:is|are) not (?:seen|identified|present|visualized|evident|enlarged|widened)|not seen|" \
                r"not identified|not enlarged|has resolved|have resolved|resolved|absent"
NEGATION_CLAUSE = r"normal|unremarkable|within normal limits"
HEDGE_PRE = r"possible|possibly|questionable|suspected|probable|cannot exclude|can not exclude|" \
            r"cannot rule out|cannot r/o|r/o|concerning for|suspicious for|worrisome for|may represent|" \
            r"may reflect|could represent|could reflect"
HEDGE_POST = r"cannot be excluded|cannot be ruled out|(?:is |are )?not excluded|may be|is possible|is suspected"
POSITIVE_PRE = r"consistent with|compatible with|c/w"
_CUE_KINDS = (("hedge_post", HEDGE_POST), ("neg_post", NEGATION_POST), ("hedge_pre", HEDGE_PRE),
              ("pos_pre", POSITIVE_PRE), ("neg_clause", NEGATION_CLAUSE), ("neg_pre", NEGATION_PRE))
_CUES = re.compile("|".join(f"(?P<{k}>(?<![\\w/-])(?:{p})(?![\\w/-]))" for k, p in _CUE_KINDS))
_CLAUSE_BREAK = re.compile(r"[;.!](?=\s|$)|(?<=\S)\?(?=\s|$)|\s(?:but|however|although|with|without|which)\b|"
                           r"\s(?:and\s+)?there (?:is|are)\b")
_SEGMENT_BREAK = re.compile(r",|\s(?:and|or|nor)\s")
_PREPOSITION = re.compile(r"\b(?:in|at|of|within|involving|along|over|measuring)\b")
_QUESTION = re.compile(r"\?")
_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(mm|cm)\b")
#: A list marker or an ALL-CAPS organ header at the start of a sentence ("2. ", "- ", "LUNGS: ").
PREFIX = re.compile(r"^\s*(?:(?:\d{1,2}[.)]|[-*\u2022])\s+)?(?:[A-Z][A-Z/&]*(?: [A-Z/&]+)*:\s+)?")
_UPPER_SIDE = re.compile(r"(?<![\w/])(R|L)(?![\w/])")
_UPPER_CM = re.compile(r"(?<![\w/])(?<!\d )CM(?![\w/])")

_SUBJECT_TABLE = _table({**FINDING_SUBJECTS, **DEVICE_SUBJECTS})
_PREDICATE_TABLE = _table(PREDICATE_SUBJECTS)
_POSITION_TABLE = _table(POSITIONS)
_SIDE_TABLE = _table(SIDES)
_LOCATION_TABLE = _table(LOCATIONS)
_SIDE_LOCATION_TABLE = _table({k: v for k, v in SIDE_LOCATIONS.items()})
_SEVERITY_TABLE = _table(SEVERITIES)
_TREND_TABLE = _table(TRENDS)


@dataclass(frozen=True)
class FactMention:
    """One fact found in a sentence, with the spans (sentence character offsets) it was read from.

    ``cue`` is the span of the cue that decided its presence (None: positive by default); ``cue_kind`` names it
    (``neg_pre``, ``neg_post``, ``neg_clause``, ``hedge_pre``, ``hedge_post``, ``pos_pre``). ``attributes`` maps each
    stated attribute to the span of its word.
    """

    fact: Fact
    subject: Span
    clause: Span
    segment: Span
    cue: Span | None = None
    cue_kind: str | None = None
    attributes: dict[Attribute, Span] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedSentence:
    """A sentence, where its content starts (after a list marker / organ header) and its fact mentions."""

    text: str
    content_start: int
    mentions: tuple[FactMention, ...]
    clauses: tuple[Span, ...]

    @property
    def facts(self) -> list[Fact]:
        return [m.fact for m in self.mentions]


def _find(table, text: str, taken: list[Span] | None = None) -> list[tuple[Span, object]]:
    """Non-overlapping matches of a pattern table, longest first, avoiding ``taken`` spans."""
    hits = []
    for pattern, value in table:
        for m in pattern.finditer(text):
            hits.append(((m.start(), m.end()), value))
    hits.sort(key=lambda h: (-(h[0][1] - h[0][0]), h[0][0]))
    out: list[tuple[Span, object]] = []
    blocked = list(taken or [])
    for span, value in hits:
        if not any(span[0] < b[1] and b[0] < span[1] for b in blocked):
            out.append((span, value))
            blocked.append(span)
    return sorted(out, key=lambda h: h[0][0])


def _clauses(text: str, start: int, end: int) -> list[Span]:
    """Clause spans: cut at punctuation (dropped) and before breaker words (kept with the next clause)."""
    spans, last = [], start
    for m in _CLAUSE_BREAK.finditer(text, start, end):
        punct = m.group(0).strip() in (";", ".", "!", "?")
        cut = m.end() if m.group(0) == "?" else m.start()  # a trailing "?" hedges its own clause
        if cut > last:
            spans.append((last, cut))
        last = m.end() if punct else m.start()
    spans.append((last, end))
    return [s for s in spans if text[s[0]:s[1]].strip()]


def _segments(text: str, clause: Span) -> list[Span]:
    """Comma / "and" / "or" / "nor" segments of a clause (the connectors dropped)."""
    spans, last = [], clause[0]
    for m in _SEGMENT_BREAK.finditer(text, clause[0], clause[1]):
        spans.append((last, m.start()))
        last = m.end()
    spans.append((last, clause[1]))
    return [s for s in spans if text[s[0]:s[1]].strip()]


def _blank(text: str, spans: Iterable[Span]) -> str:
    chars = list(text)
    for a, b in spans:
        chars[a:b] = " " * (b - a)
    return "".join(chars)


def _inside(span: Span, outer: Span) -> bool:
    return outer[0] <= span[0] and span[1] <= outer[1]


@dataclass
class _Subject:
    span: Span
    subject: str
    clause: int
    segment: Span
    attrs: dict[Attribute, object] = field(default_factory=dict)
    spans: dict[Attribute, Span] = field(default_factory=dict)


def _scan(sentence: str, start: int):
    """Lexicon matches: (lower-cased text, text with non-cue phrases blanked, normal-study spans, subjects,
    predicate subjects, modifiers, cues)."""
    low = sentence.lower()
    normal = [m.span() for m in NORMAL_STUDY.finditer(low, start)]
    ignored = normal + [m.span() for m in _NOT_A_CUE.finditer(low, start)]
    work = _blank(low, ignored)
    work = " " * start + work[start:]
    positions = _find(_POSITION_TABLE, work)
    work_np = _blank(work, [p for p, _ in positions])  # "right atrium" is a position, not a side
    subjects = _find(_SUBJECT_TABLE, work_np)
    subjects += [((m.start(), m.end()), "Cardiomegaly") for m in _UPPER_CM.finditer(sentence, start)
                 if not any(a < m.end() and m.start() < b for (a, b), _ in subjects)]
    taken = [s for s, _ in subjects]
    predicates = _find(_PREDICATE_TABLE, work_np, taken)
    mods: list[tuple[Span, Attribute, object]] = [(s, Attribute.POSITION, v) for s, v in positions]
    side_loc = _find(_SIDE_LOCATION_TABLE, work_np, taken)
    taken += [s for s, _ in side_loc] + [s for s, _ in predicates]
    mods += [(s, Attribute.LATERALITY, v) for s, v in side_loc]  # (side, location) pairs, split on attach
    for table, attr in ((_SIDE_TABLE, Attribute.LATERALITY), (_LOCATION_TABLE, Attribute.LOCATION),
                        (_SEVERITY_TABLE, Attribute.SEVERITY), (_TREND_TABLE, Attribute.TREND)):
        found = _find(table, work_np, taken)
        taken += [s for s, _ in found]
        mods += [(s, attr, v) for s, v in found]
    mods += [(m.span(), Attribute.LATERALITY, Side.RIGHT if m.group(1) == "R" else Side.LEFT)
             for m in _UPPER_SIDE.finditer(sentence, start) if not any(a < m.end() and m.start() < b
                                                                       for a, b in taken)]
    mods += [(m.span(), Attribute.SIZE, round(float(m.group(1)) * (10 if m.group(2) == "cm" else 1), 1))
             for m in _SIZE.finditer(work_np)]
    cues = [(m.span(), m.lastgroup) for m in _CUES.finditer(work_np)]
    # "? RLL PNA" / "opacity, ? PNA": a "?" before words hedges what follows; "effusion?" hedges what precedes.
    cues += [(m.span(), "hedge_pre" if re.match(r"\s*\w", work_np[m.end():]) else "hedge_post")
             for m in _QUESTION.finditer(work_np)]
    return low, work_np, normal, subjects, predicates, mods, cues


def _presence(subject: Span, clause: Span, cues: list[tuple[Span, str]]) -> tuple[Presence, Span | None, str | None]:
    """Presence from the nearest pre-cue before the subject, else the first post-cue after it (same clause)."""
    inside = [(s, k) for s, k in cues if _inside(s, clause)]
    pre = [(s, k) for s, k in inside if s[1] <= subject[0] and not k.endswith("_post")]
    post = [(s, k) for s, k in inside if s[0] >= subject[1] and not k.endswith("_pre")]
    chosen = pre[-1] if pre else (post[0] if post else None)
    if chosen is None:
        return Presence.POSITIVE, None, None
    kind = chosen[1]
    presence = (Presence.UNCERTAIN if kind.startswith("hedge") else
                Presence.POSITIVE if kind == "pos_pre" else Presence.NEGATIVE)
    return presence, chosen[0], kind


def _attach(text: str, subjects: list[_Subject], span: Span, attr: Attribute, value: object, clause: int,
            segment: Span) -> None:
    """Give an attribute to the nearest fitting subject of its segment, else to the previous segment's."""
    def fits(s: _Subject) -> bool:
        device = s.subject in DEVICE_NAMES
        if attr is Attribute.POSITION:
            return device
        return not device or attr in (Attribute.LATERALITY, Attribute.SIZE, Attribute.TREND)

    same = [s for s in subjects if s.segment == segment and fits(s)]
    before_in_seg = [s for s in same if s.span[1] <= span[0]]
    after_in_seg = [s for s in same if s.span[0] >= span[1]]
    if before_in_seg and (not after_in_seg or _PREPOSITION.search(text, before_in_seg[-1].span[1], span[0])):
        target = before_in_seg[-1]  # "consolidation in the left lower lobe": the phrase follows its subject
    elif after_in_seg:
        target = after_in_seg[0]  # "small left pleural effusion": words before their subject
    else:
        before = [s for s in subjects if s.clause == clause and s.span[1] <= span[0] and fits(s)]
        if not before:
            return
        target = before[-1]
    values = value if isinstance(value, tuple) else (value,)
    attrs = (Attribute.LATERALITY, Attribute.LOCATION) if isinstance(value, tuple) else (attr,)
    for a, v in zip(attrs, values, strict=True):
        if a not in target.attrs:
            target.attrs[a] = v
            target.spans[a] = span


DEVICE_NAMES = frozenset(DEVICE_SUBJECTS.values())


@functools.lru_cache(maxsize=65536)  # variants and each error kind re-read the same sentences; results are frozen
def parse_sentence(sentence: str) -> ParsedSentence:
    """The facts one sentence (or list item) states, with the spans they were read from."""
    prefix = PREFIX.match(sentence)
    start = prefix.end() if prefix else 0
    low, work, normal, subjects, predicates, mods, cues = _scan(sentence, start)
    clauses = _clauses(low, start, len(sentence))
    found: list[_Subject] = []

    def locate(span: Span) -> tuple[int, Span] | None:
        for ci, clause in enumerate(clauses):
            if _inside(span, clause):
                seg = next((g for g in _segments(work, clause) if _inside(span, g)), clause)
                return ci, seg
        return None

    for span, name in subjects:
        where = locate(span)
        if where:
            found.append(_Subject(span, str(name), where[0], where[1]))
    for span, name in predicates:
        where = locate(span)
        if where and _PREDICATE.search(work, *clauses[where[0]]):
            found.append(_Subject(span, str(name), where[0], where[1]))
    found.sort(key=lambda s: s.span[0])
    for span, attr, value in mods:
        where = locate(span)
        if where:
            _attach(work, found, span, attr, value, *where)
    mentions = []
    for s in found:
        presence, cue, kind = _presence(s.span, clauses[s.clause], cues)
        fact = replace(Fact(s.subject, presence), **{a.value: v for a, v in s.attrs.items()})
        mentions.append(FactMention(fact, s.span, clauses[s.clause], s.segment, cue, kind, dict(s.spans)))
    for span in normal:
        where = locate(span)
        if where:
            mentions.append(FactMention(Fact(NO_FINDING), span, clauses[where[0]], where[1]))
    mentions.sort(key=lambda m: m.subject[0])
    return ParsedSentence(sentence, start, tuple(mentions), tuple(clauses))


def parse_report(text: str) -> list[ParsedSentence]:
    """Every sentence of a (possibly section-tagged) report, parsed."""
    return [parse_sentence(s) for s in all_sentences(text)]


def report_facts(text: str) -> list[Fact]:
    """All facts of a report, in order."""
    return [f for p in parse_report(text) for f in p.facts]
