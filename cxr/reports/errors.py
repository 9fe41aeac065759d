"""Error injection: minimal edits that change exactly one clinical fact, for hard negatives (paper §B.3).

The nine categories of the authors' error prompt (:class:`ErrorKind`). Each injector reads the report's facts with
:mod:`cxr.reports.fact_parser`, picks one fact (rng) and rewrites only the words that state the attribute it
changes, so the corrupted report differs from the original in exactly one attribute of one fact:

1. ``change_severity`` — a severity word of a present/uncertain finding (small↔large, mild↔severe,
   mildly↔severely) or its trend (increased↔decreased, stable→worsening). Never the size words of a denied finding
   ("No large effusion" is left alone: it asserts nothing about size).
2. ``change_location`` — its side (left↔right, RLL↔LLL) or its location (upper↔lower lobe, apical↔basilar,
   retrocardiac→perihilar, perihilar→basilar, middle lobe/lingula→lower lobe).
3. ``false_prediction`` — a denied or hedged finding stated as present. In a list ("No A, B, or C.") only one item
   is taken out of the list and stated in a sentence of its own ("No A or C. B is present."), never the whole list.
4. ``false_negation`` — a present or hedged finding denied ("No left pleural effusion."), keeping its side and
   location, in sentences that state that one finding.
5. ``change_measurement`` — a size or device distance with units ("6 mm" → "12 mm", "1.2 cm" → "2.4 cm").
6. ``add_opposite_sentence`` — a sentence contradicting a stated finding appended to its section.
7. ``add_medical_device`` — a device line for a device the report does not mention.
8. ``change_device_name`` — one device named as another (endotracheal ↔ nasogastric tube, central line ↔ PICC).
9. ``change_device_position`` — one device position (above ↔ below the carina, stomach ↔ esophagus, SVC → right
   atrium, in standard position ↔ malpositioned).

Every injector returns an :class:`InjectedError` whose :class:`ErrorEdit` says which sentence was replaced (or
added), which fact and attribute changed and the new value, so a test can re-read the corrupted sentence and check
that exactly that attribute differs. :func:`inject_error` prefers categories 1-6 and uses 7-9 only when none of
them applies (the authors' instruction: "use 7-9 only if needed").
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from cxr.reports.fact_parser import FactMention, ParsedSentence, parse_sentence
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
from cxr.reports.sentences import capitalize_first, parse_sections, render_sections, split_sentences


class ErrorKind(str, Enum):
    """The nine error categories of the authors' error-injection prompt."""

    SEVERITY_CHANGE = "change_severity"
    LOCATION_CHANGE = "change_location"
    FALSE_PREDICTION = "false_prediction"
    FALSE_NEGATION = "false_negation"
    MEASUREMENT_CHANGE = "change_measurement"
    ADD_OPPOSITE_SENTENCE = "add_opposite_sentence"
    ADD_DEVICE = "add_medical_device"
    DEVICE_CHANGE = "change_device_name"
    DEVICE_POSITION = "change_device_position"


#: Categories used first; the device categories only when none of these applies.
PREFERRED_KINDS: tuple[ErrorKind, ...] = tuple(ErrorKind)[:6]


@dataclass(frozen=True)
class ErrorEdit:
    """What an injected error changed.

    ``section``/``sentence`` index the replaced sentence in :func:`parse_sections` of the original text (for an
    added sentence: the position it was inserted at, ``before`` None). ``after`` is the replacement text (one or two
    sentences). ``fact_index`` indexes the changed fact in ``parse_sentence(before).facts``; ``attribute``, ``old``
    and ``new`` say how it changed. An added sentence states ``added`` (a new fact) instead.
    """

    section: int
    sentence: int
    before: str | None
    after: str
    attribute: Attribute
    fact_index: int | None = None
    old: object = None
    new: object = None
    added: Fact | None = None

    def expected_facts(self) -> list[Fact]:
        """The facts the replacement text should state: the original's with the one change applied."""
        facts = parse_sentence(self.before).facts if self.before is not None else []
        if self.added is not None:
            return [*facts, self.added]
        i = self.fact_index if self.fact_index is not None else 0
        facts[i] = replace(facts[i], **{self.attribute.value: self.new})
        return facts


@dataclass(frozen=True)
class InjectedError:
    """An error-injected report, its category and the edit that made it."""

    text: str
    kind: ErrorKind
    edit: ErrorEdit | None = None


# ---------------------------------------------------------------------------------------------- plumbing
@dataclass(frozen=True)
class _Site:
    """A candidate fact: its section/sentence position, the parsed sentence and the mention index."""

    section: int
    sentence: int
    parsed: ParsedSentence
    index: int

    @property
    def mention(self) -> FactMention:
        return self.parsed.mentions[self.index]

    @property
    def fact(self) -> Fact:
        return self.mention.fact


def _sites(text: str, keep: Callable[[_Site], bool]) -> tuple[list, list[_Site]]:
    sections = parse_sections(text)
    out = []
    for i, sec in enumerate(sections):
        for j, sentence in enumerate(sec.sentences):
            parsed = parse_sentence(sentence)
            for k in range(len(parsed.mentions)):
                site = _Site(i, j, parsed, k)
                if keep(site):
                    out.append(site)
    return sections, out


_MARKER = re.compile(r"^(?:(\d{1,2})([.)])|([-*\u2022]))\s+")


def list_item_like(previous: str | None, line: str) -> str:
    """``line`` written as the next item of the list ``previous`` ends (numbered, bulleted or prose)."""
    m = _MARKER.match(previous or "")
    if m is None:
        return line
    marker = f"{int(m.group(1)) + 1}{m.group(2)}" if m.group(1) else m.group(3)
    body = line if previous.rstrip().endswith((".", "?", "!")) else line.rstrip(".")
    return f"{marker} {body}"


def _finish(sections, site_or_pos: tuple[int, int], after: str, kind: ErrorKind, edit: ErrorEdit,
            insert: bool = False) -> InjectedError:
    i, j = site_or_pos
    new = split_sentences(after)
    sentences = sections[i].sentences
    sections[i].sentences = sentences[:j] + new + sentences[j + (0 if insert else 1):]
    return InjectedError(render_sections(sections), kind, edit)


def _swap(sentence: str, span: tuple[int, int], word: str) -> str:
    """Replace ``span`` by ``word`` in the case of the replaced text; fix a preceding "a"/"an"."""
    old = sentence[span[0]:span[1]]
    if old.isupper() and len(old) > 1 or sentence.isupper():
        word = word.upper()
    elif old[:1].isupper():
        word = word[:1].upper() + word[1:]
    head = sentence[:span[0]]
    m = re.search(r"\b([Aa]n?) $", head)
    if m:
        art = "an" if re.match(r"[aeiou]|8|11\b|18\b", word.lower()) else "a"
        art = art.upper() if m.group(1).isupper() and len(m.group(1)) > 1 else (
            art.capitalize() if m.group(1)[0].isupper() else art)
        head = head[:m.start(1)] + art + " "
    return head + word + sentence[span[1]:]


def _last_item(sentences: list[str]) -> str | None:
    """The last list item of a section when its last sentence belongs to a list, else None."""
    for sentence in reversed(sentences):
        if _MARKER.match(sentence):
            return sentence if sentence is sentences[-1] or sentences[-1].rstrip().endswith(".") else None
    return None


def _case_like(text: str, sentence: str) -> str:
    return text.upper() if sentence.isupper() else text


def _content_upper(text: str, start: int) -> str:
    """Capitalise the first letter of the content (after a list marker / organ header)."""
    rest = text[start:].lstrip()
    pad = text[start:len(text) - len(rest)]
    return text[:start] + pad + capitalize_first(rest)


def _present(s: _Site) -> bool:
    return s.fact.presence is not Presence.NEGATIVE and s.fact.subject != NO_FINDING and not s.fact.is_device


# ------------------------------------------------------------------------------------ 1. severity / trend
_DEGREE_SUBJECTS = frozenset({"Cardiomegaly", "Edema", "Atelectasis", "Enlarged Cardiomediastinum"})
_SEVERITY_SWAPS: dict[str, tuple[str, ...]] = {
    "small": ("large",), "tiny": ("large",), "trace": ("large",), "slight": ("marked",), "minimal": ("severe",),
    "mild": ("severe",), "large": ("small",), "severe": ("mild",), "marked": ("mild",), "extensive": ("minimal",),
    "massive": ("small",), "mildly": ("severely",), "minimally": ("severely",), "slightly": ("markedly",),
    "severely": ("mildly",), "markedly": ("mildly",), "moderately": ("mildly", "severely"),
}
_TREND_SWAPS: dict[str, str] = {
    "increased": "decreased", "decreased": "increased", "increasing": "decreasing", "decreasing": "increasing",
    "worsened": "improved", "improved": "worsened", "worsening": "improving", "improving": "worsening",
    "stable": "worsening", "unchanged": "worsened", "persistent": "worsening",
}
_WORD_GRADE = {**{w: Severity.SMALL for w in ("small", "tiny", "trace", "slight", "minimal", "mild", "mildly",
                                             "minimally", "slightly")},
               **{w: Severity.MODERATE for w in ("moderate", "moderately")},
               **{w: Severity.LARGE for w in ("large", "severe", "marked", "extensive", "massive", "severely",
                                             "markedly")}}
_WORD_TREND = {"increased": Trend.WORSE, "increasing": Trend.WORSE, "worsened": Trend.WORSE,
               "worsening": Trend.WORSE, "decreased": Trend.BETTER, "decreasing": Trend.BETTER,
               "improved": Trend.BETTER, "improving": Trend.BETTER}


def change_severity(text: str, rng: random.Random) -> InjectedError | None:
    """Change the severity word (or the trend word) of one present or hedged finding."""
    def options(s: _Site) -> list[tuple[Attribute, str]]:
        out = []
        for attr, table in ((Attribute.SEVERITY, _SEVERITY_SWAPS), (Attribute.TREND, _TREND_SWAPS)):
            span = s.mention.attributes.get(attr)
            word = s.parsed.text[span[0]:span[1]].lower() if span else ""
            if word == "moderate":
                out += [(attr, w) for w in (("mild", "severe") if s.fact.subject in _DEGREE_SUBJECTS
                                            else ("small", "large"))]
            elif isinstance(table.get(word), tuple):
                out += [(attr, w) for w in table[word]]
            elif word in table:
                out.append((attr, table[word]))
        return out

    sections, sites = _sites(text, lambda s: _present(s) and bool(options(s)))
    if not sites:
        return None
    site = rng.choice(sites)
    attr, word = rng.choice(options(site))
    sentence = site.parsed.text
    after = _swap(sentence, site.mention.attributes[attr], word)
    new = _WORD_GRADE[word] if attr is Attribute.SEVERITY else _WORD_TREND[word]
    edit = ErrorEdit(site.section, site.sentence, sentence, after, attr, site.index,
                     getattr(site.fact, attr.value), new)
    return _finish(sections, (site.section, site.sentence), after, ErrorKind.SEVERITY_CHANGE, edit)


# ------------------------------------------------------------------------------------------- 2. location
_SIDE_SWAPS = {"right": "left", "left": "right", "right-sided": "left-sided", "left-sided": "right-sided",
               "rt": "lt", "lt": "rt", "r": "L", "l": "R", "rll": "LLL", "lll": "RLL", "rul": "LUL", "lul": "RUL"}
_LOCATION_SWAPS = {"upper lobe": "lower lobe", "lower lobe": "upper lobe", "upper lobes": "lower lobes",
                   "lower lobes": "upper lobes", "upper lung": "lower lung", "lower lung": "upper lung",
                   "apical": "basilar", "apex": "base", "apices": "bases", "basilar": "apical", "basal": "apical",
                   "base": "apex", "bases": "apices", "retrocardiac": "perihilar", "perihilar": "basilar",
                   "middle lobe": "lower lobe", "mid lung": "lower lung", "mid lungs": "lower lungs",
                   "lingula": "left lower lobe", "rll": "RUL", "rul": "RLL", "lll": "LUL", "lul": "LLL",
                   "rml": "RLL"}
_ABBREV_VALUE = {"RLL": (Side.RIGHT, Location.LOWER), "LLL": (Side.LEFT, Location.LOWER),
                 "RUL": (Side.RIGHT, Location.UPPER), "LUL": (Side.LEFT, Location.UPPER)}
_LOCATION_VALUE = {"lower lobe": Location.LOWER, "upper lobe": Location.UPPER, "lower lobes": Location.LOWER,
                   "upper lobes": Location.UPPER, "lower lung": Location.LOWER, "upper lung": Location.UPPER,
                   "lower lungs": Location.LOWER, "basilar": Location.BASAL, "apical": Location.APICAL,
                   "apex": Location.APICAL, "base": Location.BASAL, "apices": Location.APICAL,
                   "bases": Location.BASAL, "perihilar": Location.PERIHILAR, "left lower lobe": Location.LOWER}


def _location_options(s: _Site) -> list[tuple[Attribute, tuple[int, int], str, object]]:
    out = []
    text = s.parsed.text
    for attr, table in ((Attribute.LATERALITY, _SIDE_SWAPS), (Attribute.LOCATION, _LOCATION_SWAPS)):
        span = s.mention.attributes.get(attr)
        if span is None:
            continue
        word = text[span[0]:span[1]]
        new = table.get(word.lower())
        if new is None or (word.lower() in ("r", "l") and not word.isupper()):
            continue
        if word.upper() in _ABBREV_VALUE or word.lower() == "rml":
            side, loc = _ABBREV_VALUE[new]
            if (attr is Attribute.LATERALITY) != (side != s.fact.laterality):
                continue  # the abbreviation swap must change the attribute it is filed under
            out.append((attr, span, new, side if attr is Attribute.LATERALITY else loc))
        elif attr is Attribute.LATERALITY:
            out.append((attr, span, new, Side.LEFT if new.lower().startswith("l") else Side.RIGHT))
        else:
            out.append((attr, span, new, _LOCATION_VALUE[new]))
    return out


def change_location(text: str, rng: random.Random) -> InjectedError | None:
    """Move one present or hedged finding: the other side, or another lung location."""
    sections, sites = _sites(text, lambda s: _present(s) and bool(_location_options(s)))
    if not sites:
        return None
    site = rng.choice(sites)
    attr, span, word, value = rng.choice(_location_options(site))
    sentence = site.parsed.text
    after = _swap(sentence, span, word) if not word.isupper() else sentence[:span[0]] + word + sentence[span[1]:]
    edit = ErrorEdit(site.section, site.sentence, sentence, after, attr, site.index,
                     getattr(site.fact, attr.value), value)
    return _finish(sections, (site.section, site.sentence), after, ErrorKind.LOCATION_CHANGE, edit)


# ----------------------------------------------------------------------------------- 3. false prediction
_DROP_CUE = {"no", "no evidence of", "possible", "questionable", "suspected", "probable", "cannot exclude",
             "can not exclude", "cannot rule out", "cannot r/o", "r/o", "?"}
_CUE_REWRITE = {"without": "with", "negative for": "positive for", "free of": "with",
                "possibly": "consistent with", "concerning for": "consistent with", "suspicious for": "consistent with",
                "worrisome for": "consistent with", "may represent": "represents", "could represent": "represents",
                "may reflect": "reflects", "could reflect": "reflects", "may be": "is", "absent": "present",
                "resolved": "present", "has resolved": "is present", "have resolved": "are present",
                "is possible": "is present", "is suspected": "is present", "cannot be excluded": "is present",
                "cannot be ruled out": "is present", "not excluded": "present", "is not excluded": "is present",
                "are not excluded": "are present"}
_NORMAL_TO_ABNORMAL = {"Cardiomegaly": "enlarged", "Enlarged Cardiomediastinum": "widened"}


def _governed(site: _Site) -> list[int]:
    """Indices of the mentions whose presence comes from the same cue as this one."""
    m = site.mention
    return [k for k, x in enumerate(site.parsed.mentions) if x.cue == m.cue and x.clause == m.clause]


def _tidy(text: str, start: int) -> str:
    text = re.sub(r"\s{2,}", " ", text).replace(" ,", ",").replace(" .", ".")
    return _content_upper(text, start)


def _drop_cue(site: _Site) -> str | None:
    """The sentence with the cue of its only governed fact removed or turned positive."""
    s, m = site.parsed.text, site.mention
    a, b = m.cue
    cue = s[a:b].lower()
    if m.cue_kind == "neg_clause":
        word = _NORMAL_TO_ABNORMAL.get(m.fact.subject)
        if word is None:
            return None
        b = b + len(" in size") if s[b:b + 8].lower() == " in size" else b
        return _swap(s, (a, b), word)
    if cue in _DROP_CUE:
        return _tidy(s[:a] + s[b:], site.parsed.content_start)
    if cue.startswith(("is not ", "are not ", "not ")) and cue not in _CUE_REWRITE:
        return _tidy(s[:a] + re.sub(r"\bnot\s+", "", s[a:b], count=1, flags=re.IGNORECASE) + s[b:],
                     site.parsed.content_start)
    if cue in _CUE_REWRITE:
        return _tidy(_swap(s, (a, b), _CUE_REWRITE[cue]), site.parsed.content_start)
    return None


def _plural(noun: str) -> bool:
    last = noun.split()[-1].lower() if noun.split() else ""
    return last.endswith("s") and not last.endswith(("sis", "ss", "us", "ptx"))


def _extract_from_list(site: _Site) -> str | None:
    """"No A, B, or C." with B taken out: "No A or C. B is present." (None when the clause is not a plain list)."""
    s, m, mentions = site.parsed.text, site.mention, site.parsed.mentions
    gov = [mentions[k] for k in _governed(site)]
    if m.cue_kind != "neg_pre" or len({g.segment for g in gov}) != len(gov):
        return None
    cue_end = m.cue[1]
    starts = [cue_end if g.segment[0] <= m.cue[0] else g.segment[0] for g in gov]
    if any(s[g.subject[1]:g.segment[1]].strip() for g in gov[:-1]) or starts[0] != cue_end:
        return None  # an item with words after its subject, or the cue not before the first item
    cores = [s[st:g.subject[1]].strip() for st, g in zip(starts, gov, strict=True)]
    target = gov.index(m)
    between = s[gov[-2].segment[1]:gov[-1].segment[0]]
    conj = next((w for w in ("nor", "and", "or") if re.search(rf"\b{w}\b", between, re.IGNORECASE)), "or")
    conj = conj.upper() if s.isupper() else conj
    rest = [c for k, c in enumerate(cores) if k != target]
    oxford = "," if between.strip().startswith(",") and len(rest) > 2 else ""
    joined = rest[0] if len(rest) == 1 else ", ".join(rest[:-1]) + f"{oxford} {conj} {rest[-1]}"
    tail = s[gov[-1].subject[1]:gov[-1].segment[1]]
    clause = s[m.clause[0]:cue_end].rstrip() + " " + joined + tail
    sentence = _tidy(s[:m.clause[0]] + clause + s[gov[-1].segment[1]:], site.parsed.content_start)
    sentence = sentence if sentence.rstrip().endswith((".", "?", "!")) else sentence.rstrip() + "."
    core = cores[target]
    added = f"{capitalize_first(core)} {'are' if _plural(core) else 'is'} present."
    return f"{sentence} {_case_like(added, s)}"


def false_prediction(text: str, rng: random.Random) -> InjectedError | None:
    """State one denied (or hedged) finding as present; a list item is moved out of its list first."""
    def rewrite(site: _Site) -> str | None:
        if site.mention.cue is None:
            return None
        if len(_governed(site)) == 1:
            return _drop_cue(site)
        return _extract_from_list(site) if site.fact.presence is Presence.NEGATIVE else None

    def keep(site: _Site) -> bool:
        f = site.fact
        return (f.presence is not Presence.POSITIVE and f.subject != NO_FINDING and not f.is_device
                and rewrite(site) is not None)

    sections, sites = _sites(text, keep)
    if not sites:
        return None
    site = rng.choice(sites)
    after = rewrite(site)
    edit = ErrorEdit(site.section, site.sentence, site.parsed.text, after, Attribute.PRESENCE, site.index,
                     site.fact.presence, Presence.POSITIVE)
    return _finish(sections, (site.section, site.sentence), after, ErrorKind.FALSE_PREDICTION, edit)


# ------------------------------------------------------------------------------------- 4. false negation
_NOUN = {"Pleural Effusion": "pleural effusion", "Pneumothorax": "pneumothorax", "Consolidation": "consolidation",
         "Pneumonia": "pneumonia", "Lung Opacity": "opacity", "Edema": "edema", "Cardiomegaly": "cardiomegaly",
         "Enlarged Cardiomediastinum": "mediastinal widening", "Atelectasis": "atelectasis",
         "Lung Lesion": "nodule", "Fracture": "rib fracture", "Pleural Other": "pleural thickening"}


def _where(fact: Fact) -> str:
    """Side and location words for a fact ("left lower lobe", "right apical", "lingular", "retrocardiac")."""
    side, loc = fact.laterality, fact.location
    if loc is Location.MID and side is Side.LEFT:
        return "lingular"
    words = [side.value] if side else []
    words += {Location.UPPER: ["upper lobe"], Location.LOWER: ["lower lobe"],
              Location.MID: ["middle lobe" if side is Side.RIGHT else "mid lung"], Location.APICAL: ["apical"],
              Location.BASAL: ["basilar"], Location.RETROCARDIAC: ["retrocardiac"],
              Location.PERIHILAR: ["perihilar"], None: []}[loc]
    return " ".join(words)


def denial(fact: Fact) -> str:
    """A sentence denying ``fact``'s subject at its stated side and location ("No left lower lobe consolidation.")."""
    where = _where(fact)
    return f"No {where + ' ' if where else ''}{_NOUN[fact.subject]}."


def false_negation(text: str, rng: random.Random) -> InjectedError | None:
    """Deny one present or hedged finding, in a sentence that states only that finding."""
    sections, sites = _sites(text, lambda s: _present(s) and len(s.parsed.mentions) == 1
                             and s.fact.subject in _NOUN)
    if not sites:
        return None
    site = rng.choice(sites)
    s = site.parsed.text
    after = s[:site.parsed.content_start] + _case_like(denial(site.fact), s)
    edit = ErrorEdit(site.section, site.sentence, s, after, Attribute.PRESENCE, site.index, site.fact.presence,
                     Presence.NEGATIVE)
    return _finish(sections, (site.section, site.sentence), after, ErrorKind.FALSE_NEGATION, edit)


# --------------------------------------------------------------------------------------- 5. measurement
def _new_size(number: str, unit: str, rng: random.Random) -> tuple[str, float]:
    value = float(number)
    decimals = len(number.split(".")[1]) if "." in number else 0
    factor = rng.choice((2.0, 3.0)) if value < (3 if unit == "cm" else 20) else 0.5
    new = round(value * factor, decimals) if decimals else float(round(value * factor))
    text = f"{new:.{decimals}f}" if decimals else str(int(new))
    return text, round(new * (10 if unit == "cm" else 1), 1)


def change_measurement(text: str, rng: random.Random) -> InjectedError | None:
    """Change one measured size or device distance ("6 mm" → "12 mm", "1.2 cm" → "2.4 cm", "4 cm" → "8 cm")."""
    sections, sites = _sites(text, lambda s: Attribute.SIZE in s.mention.attributes
                             and s.fact.presence is not Presence.NEGATIVE)
    if not sites:
        return None
    site = rng.choice(sites)
    s = site.parsed.text
    a, b = site.mention.attributes[Attribute.SIZE]
    m = re.match(r"(\d+(?:\.\d+)?)(\s*)(mm|cm)", s[a:b], re.IGNORECASE)
    number, value = _new_size(m.group(1), m.group(3).lower(), rng)
    after = _swap(s, (a, a + len(m.group(1))), number)
    edit = ErrorEdit(site.section, site.sentence, s, after, Attribute.SIZE, site.index, site.fact.size_mm, value)
    return _finish(sections, (site.section, site.sentence), after, ErrorKind.MEASUREMENT_CHANGE, edit)


# ----------------------------------------------------------------------------------- 6. opposite sentence
_ACUTE = ("Pneumothorax", "Pleural Effusion", "Consolidation")


def assertion(fact: Fact) -> str:
    """A sentence stating ``fact``'s subject as present at its stated side and location."""
    where = _where(fact)
    noun = _NOUN[fact.subject]
    return capitalize_first(f"{where + ' ' if where else ''}{noun} is present.")


def add_opposite_sentence(text: str, rng: random.Random, context: str | None = None) -> InjectedError | None:
    """Append to a finding's section a sentence contradicting it ("No left pleural effusion." after "Small left
    pleural effusion."; "Pneumothorax is present." after "No pneumothorax." or a normal-study statement).

    ``context`` (the findings, when ``text`` is their impression): a normal-study statement is contradicted only
    with a finding the context does not state as present, so the added sentence stays an error.
    """
    def keep(s: _Site) -> bool:
        return not s.fact.is_device and (s.fact.subject in _NOUN or s.fact.subject == NO_FINDING)

    sections, sites = _sites(text, keep)
    if not sites:
        return None
    site = rng.choice(sites)
    fact = site.fact
    if fact.subject == NO_FINDING:
        stated = _present_subjects(context)
        choices = [a for a in _ACUTE if a not in stated]
        if not choices:
            return None
        added = Fact(rng.choice(choices))
        line = assertion(added)
    elif fact.presence is Presence.NEGATIVE:
        added = Fact(fact.subject, laterality=fact.laterality, location=fact.location)
        line = assertion(added)
    else:
        added = Fact(fact.subject, Presence.NEGATIVE, laterality=fact.laterality, location=fact.location)
        line = denial(added)
    last = sections[site.section].sentences
    line = list_item_like(_last_item(last), _case_like(line, site.parsed.text))
    pos = (site.section, len(last))
    edit = ErrorEdit(pos[0], pos[1], None, line, Attribute.PRESENCE, added=added)
    return _finish(sections, pos, line, ErrorKind.ADD_OPPOSITE_SENTENCE, edit, insert=True)


# ---------------------------------------------------------------------------------------- 7-9. devices
DEVICE_LINES: dict[str, tuple[str, Fact]] = {
    "endotracheal tube": ("Endotracheal tube terminates 4 cm above the carina.",
                          Fact("endotracheal tube", size_mm=40.0, position=DevicePosition.ABOVE_CARINA)),
    "tracheostomy tube": ("Tracheostomy tube is in place.",
                          Fact("tracheostomy tube", position=DevicePosition.STANDARD)),
    "nasogastric tube": ("Nasogastric tube tip is in the stomach.",
                         Fact("nasogastric tube", position=DevicePosition.STOMACH)),
    "central venous catheter": ("Right internal jugular central venous catheter terminates in the SVC.",
                                Fact("central venous catheter", laterality=Side.RIGHT,
                                     position=DevicePosition.SVC)),
    "PICC": ("Left PICC terminates at the cavoatrial junction.",
             Fact("PICC", laterality=Side.LEFT, position=DevicePosition.CAVOATRIAL)),
    "pacemaker": ("Left chest wall pacemaker leads terminate in the right ventricle.",
                  Fact("pacemaker", laterality=Side.LEFT, position=DevicePosition.RIGHT_VENTRICLE)),
    "chest tube": ("Right chest tube is in place.",
                   Fact("chest tube", laterality=Side.RIGHT, position=DevicePosition.STANDARD)),
}


def add_medical_device(text: str, rng: random.Random, context: str | None = None) -> InjectedError | None:
    """Append a device line for a device neither the report nor ``context`` (its findings) mentions."""
    sections = parse_sections(text)
    if not sections:
        return None
    present = {f.subject for sec in sections for s in sec.sentences for f in parse_sentence(s).facts}
    present |= _present_subjects(context)
    missing = [d for d in DEVICE_LINES if d not in present]
    if not missing:
        return None
    line, fact = DEVICE_LINES[rng.choice(missing)]
    last = sections[-1].sentences
    line = list_item_like(_last_item(last), _case_like(line, last[-1])) if last else line
    pos = (len(sections) - 1, len(last))
    edit = ErrorEdit(pos[0], pos[1], None, line, Attribute.SUBJECT, added=fact)
    return _finish(sections, pos, line, ErrorKind.ADD_DEVICE, edit, insert=True)


#: Device name as written (lower case) → another device's name in the same register.
DEVICE_NAME_SWAPS: dict[str, tuple[str, str]] = {
    "endotracheal tube": ("nasogastric tube", "nasogastric tube"), "et tube": ("NG tube", "nasogastric tube"),
    "ett": ("NGT", "nasogastric tube"), "nasogastric tube": ("endotracheal tube", "endotracheal tube"),
    "ng tube": ("ET tube", "endotracheal tube"), "ngt": ("ETT", "endotracheal tube"),
    "enteric tube": ("endotracheal tube", "endotracheal tube"),
    "feeding tube": ("endotracheal tube", "endotracheal tube"),
    "tracheostomy tube": ("endotracheal tube", "endotracheal tube"),
    "central venous catheter": ("PICC", "PICC"), "picc": ("central venous catheter", "central venous catheter"),
    "picc line": ("central line", "central venous catheter"), "ij line": ("PICC", "PICC"),
    "ij cvc": ("PICC", "PICC"), "internal jugular central venous catheter": ("PICC", "PICC"),
    "subclavian central venous catheter": ("PICC", "PICC"), "cvc": ("PICC", "PICC"),
    "chest tube": ("nasogastric tube", "nasogastric tube"),
}


def change_device_name(text: str, rng: random.Random) -> InjectedError | None:
    """Name one device as another (endotracheal ↔ nasogastric tube, ETT ↔ NGT, central line ↔ PICC, ...)."""
    def name(s: _Site) -> str:
        return s.parsed.text[s.mention.subject[0]:s.mention.subject[1]].lower()

    sections, sites = _sites(text, lambda s: s.fact.is_device and name(s) in DEVICE_NAME_SWAPS)
    if not sites:
        return None
    site = rng.choice(sites)
    word, subject = DEVICE_NAME_SWAPS[name(site)]
    s = site.parsed.text
    a, b = site.mention.subject
    after = s[:a] + word + s[b:] if word.isupper() or word == "PICC" else _swap(s, (a, b), word)
    after = _case_like(after, s)
    edit = ErrorEdit(site.section, site.sentence, s, after, Attribute.SUBJECT, site.index, site.fact.subject,
                     subject)
    return _finish(sections, (site.section, site.sentence), after, ErrorKind.DEVICE_CHANGE, edit)


#: Device position as written (lower case) → another position, and its value.
POSITION_SWAPS: dict[str, tuple[str, DevicePosition]] = {
    "above the carina": ("below the carina", DevicePosition.BELOW_CARINA),
    "above carina": ("below carina", DevicePosition.BELOW_CARINA),
    "below the carina": ("above the carina", DevicePosition.ABOVE_CARINA),
    "stomach": ("esophagus", DevicePosition.ESOPHAGUS), "esophagus": ("stomach", DevicePosition.STOMACH),
    "svc": ("right atrium", DevicePosition.RIGHT_ATRIUM), "mid svc": ("right atrium", DevicePosition.RIGHT_ATRIUM),
    "superior vena cava": ("right atrium", DevicePosition.RIGHT_ATRIUM),
    "cavoatrial junction": ("right atrium", DevicePosition.RIGHT_ATRIUM),
    "right atrium": ("SVC", DevicePosition.SVC), "right ventricle": ("right atrium", DevicePosition.RIGHT_ATRIUM),
    "malpositioned": ("in standard position", DevicePosition.STANDARD),
    **{p: ("malpositioned", DevicePosition.MALPOSITIONED) for p in (
        "in standard position", "in appropriate position", "in good position", "in satisfactory position",
        "in expected position", "in place", "well positioned", "well-positioned", "appropriately positioned")},
}


def change_device_position(text: str, rng: random.Random) -> InjectedError | None:
    """Move one device (above ↔ below the carina, stomach ↔ esophagus, SVC → right atrium, in place → malpositioned)."""
    def phrase(s: _Site) -> str:
        span = s.mention.attributes.get(Attribute.POSITION)
        return s.parsed.text[span[0]:span[1]].lower() if span else ""

    sections, sites = _sites(text, lambda s: s.fact.is_device and phrase(s) in POSITION_SWAPS)
    if not sites:
        return None
    site = rng.choice(sites)
    word, value = POSITION_SWAPS[phrase(site)]
    s = site.parsed.text
    span = site.mention.attributes[Attribute.POSITION]
    after = s[:span[0]] + word + s[span[1]:] if word == "SVC" else _swap(s, span, word)
    after = _case_like(after, s)
    edit = ErrorEdit(site.section, site.sentence, s, after, Attribute.POSITION, site.index, site.fact.position,
                     value)
    return _finish(sections, (site.section, site.sentence), after, ErrorKind.DEVICE_POSITION, edit)


# ----------------------------------------------------------------------------------------------- choice
ERROR_FUNCTIONS: dict[ErrorKind, Callable[[str, random.Random], InjectedError | None]] = {
    ErrorKind.SEVERITY_CHANGE: change_severity,
    ErrorKind.LOCATION_CHANGE: change_location,
    ErrorKind.FALSE_PREDICTION: false_prediction,
    ErrorKind.FALSE_NEGATION: false_negation,
    ErrorKind.MEASUREMENT_CHANGE: change_measurement,
    ErrorKind.ADD_OPPOSITE_SENTENCE: add_opposite_sentence,
    ErrorKind.ADD_DEVICE: add_medical_device,
    ErrorKind.DEVICE_CHANGE: change_device_name,
    ErrorKind.DEVICE_POSITION: change_device_position,
}


_USES_CONTEXT = frozenset({ErrorKind.ADD_OPPOSITE_SENTENCE, ErrorKind.ADD_DEVICE})


def _present_subjects(context: str | None) -> set[str]:
    """Subjects (findings and devices) that ``context`` states as present or possible."""
    if not context:
        return set()
    return {f.subject for sec in parse_sections(context) for s in sec.sentences for f in parse_sentence(s).facts
            if f.presence is not Presence.NEGATIVE}


def applicable_errors(text: str, rng: random.Random, kinds: Sequence[ErrorKind] | None = None,
                      context: str | None = None) -> list[InjectedError]:
    """Every requested error kind that applies to ``text`` (one corrupted text per kind).

    ``context`` is the text the errors must contradict when it is not ``text`` itself (the findings, when
    corrupting their impression): an added device or finding must not be one the context states.
    """
    out = []
    for kind in kinds or list(ERROR_FUNCTIONS):
        inject = ERROR_FUNCTIONS[kind]
        result = inject(text, rng, context=context) if kind in _USES_CONTEXT else inject(text, rng)
        if result is not None and result.text != text:
            out.append(result)
    return out


def inject_error(text: str, rng: random.Random, kinds: Sequence[ErrorKind] | None = None,
                 context: str | None = None) -> InjectedError | None:
    """One error of a randomly chosen applicable kind, preferring :data:`PREFERRED_KINDS` (categories 1-6);
    the device categories 7-9 only when none of those applies. None when no kind applies. ``context``: see
    :func:`applicable_errors`."""
    options = applicable_errors(text, rng, kinds, context)
    preferred = [e for e in options if e.kind in PREFERRED_KINDS]
    pool = preferred or options
    return rng.choice(pool) if pool else None
