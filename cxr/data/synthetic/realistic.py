"""Realistic report styles: the messy ways real chest X-ray reports are written, each sentence with its facts.

Real reports (MIMIC-CXR, IU/Open-I, hospital impressions) have numbered and bulleted impressions, ``___`` and
``XXXX`` de-identification, comparison and technique lines, abnormal findings worded as "stable", "unchanged",
"again seen" or "redemonstrated", "No A, B, or C." negation lists, measurements with units, ALL-CAPS organ headers
("LUNGS: Clear."), findings-only and impression-only reports and device lines ("ET tube terminates 4 cm above the
carina."). The writer here produces all of these from a study's findings and devices.

Every sentence is written together with the :class:`~cxr.reports.facts.Fact` s it states (subject, presence,
severity, side, location, size, device position, trend) — the truth against which text processing (sentence
splitting, variants, error injection) is property-tested. A fact lists only the attributes the sentence states:
"Stable cardiomegaly." has trend STABLE and no severity, whatever the world's finding was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from cxr.data.synthetic.findings import (
    Device,
    Finding,
    Laterality,
    Mention,
    PlacedDevice,
    ReportStyle,
    Section,
    Severity,
    Zone,
)
from cxr.data.synthetic.reports import ReportText
from cxr.labels import LabelState
from cxr.reports.facts import NO_FINDING, DevicePosition, Fact, Location, Presence, Side, Trend
from cxr.reports.facts import Severity as Grade

#: The styles of the realistic mix and their weights.
REALISTIC_STYLES: dict[ReportStyle, float] = {
    ReportStyle.MIMIC: 0.2, ReportStyle.OPENI: 0.15, ReportStyle.NUMBERED: 0.12, ReportStyle.BULLETED: 0.08,
    ReportStyle.TEMPLATED: 0.08, ReportStyle.FINDINGS_ONLY: 0.08, ReportStyle.FOLLOWUP: 0.12,
    ReportStyle.IMPRESSION_ONLY: 0.07, ReportStyle.HOSPITAL: 0.10,
}


class ListFormat(str, Enum):
    """How impression items are written."""

    PROSE = "prose"
    NUMBERED = "numbered"  # "1. A. 2. B." / "1) A 2) B"
    BULLETED = "bulleted"  # "- A. - B." / "* A. * B."


@dataclass(frozen=True)
class StyleProfile:
    """The knobs of one style: sections, de-identification token, list format and wording probabilities."""

    findings: bool = True
    impression: bool = True
    deid: str = "___"
    list_formats: tuple[tuple[ListFormat, float], ...] = ((ListFormat.PROSE, 1.0),)
    organ_headers: bool = False
    terse: bool = False
    upper_p: float = 0.0
    trend_p: float = 0.35  # probability a present finding is worded with a trend (when there is a prior)
    always_prior: bool = False
    negation_list_p: float = 0.5
    measure_p: float = 0.5
    comparison_p: float = 0.4


PROFILES: dict[ReportStyle, StyleProfile] = {
    ReportStyle.MIMIC: StyleProfile(list_formats=((ListFormat.PROSE, 0.65), (ListFormat.NUMBERED, 0.35))),
    ReportStyle.OPENI: StyleProfile(deid="XXXX", negation_list_p=0.8, trend_p=0.2,
                                    list_formats=((ListFormat.PROSE, 0.7), (ListFormat.NUMBERED, 0.3))),
    ReportStyle.NUMBERED: StyleProfile(list_formats=((ListFormat.NUMBERED, 1.0),)),
    ReportStyle.BULLETED: StyleProfile(list_formats=((ListFormat.BULLETED, 1.0),), deid="XXXX"),
    ReportStyle.TEMPLATED: StyleProfile(organ_headers=True, upper_p=0.0),
    ReportStyle.FINDINGS_ONLY: StyleProfile(impression=False),
    ReportStyle.FOLLOWUP: StyleProfile(trend_p=0.9, always_prior=True, comparison_p=0.9,
                                       list_formats=((ListFormat.PROSE, 0.6), (ListFormat.NUMBERED, 0.4))),
    ReportStyle.IMPRESSION_ONLY: StyleProfile(findings=False, deid="XXXX"),
    ReportStyle.HOSPITAL: StyleProfile(findings=False, terse=True, upper_p=0.5, negation_list_p=0.3,
                                       list_formats=((ListFormat.PROSE, 0.7), (ListFormat.NUMBERED, 0.3))),
}

_GRADE = {Severity.SMALL: Grade.SMALL, Severity.MODERATE: Grade.MODERATE, Severity.LARGE: Grade.LARGE}
_SIDE = {Laterality.RIGHT: Side.RIGHT, Laterality.LEFT: Side.LEFT, Laterality.BILATERAL: Side.BILATERAL}
_DEVICE_SUBJECT = {Device.ETT: "endotracheal tube", Device.NG_TUBE: "nasogastric tube",
                   Device.CENTRAL_LINE: "central venous catheter", Device.PACEMAKER: "pacemaker",
                   Device.CHEST_TUBE: "chest tube"}
# Trend wordings: prefix adjective ("stable X") or predicate ("X is again seen").
_TREND_PREFIX = {Trend.STABLE: ("stable", "unchanged", "persistent"), Trend.WORSE: ("increased", "worsening"),
                 Trend.BETTER: ("decreased", "improving"), Trend.NEW: ("new",)}
_TREND_PREDICATE = {Trend.STABLE: ("is again seen", "is redemonstrated", "is unchanged", "is stable",
                                   "is again noted"),
                    Trend.WORSE: ("has increased", "has worsened"), Trend.BETTER: ("has decreased", "has improved")}
_NEGATIVE_NOUNS = {
    "Pneumothorax": ("pneumothorax",), "Pleural Effusion": ("pleural effusion", "effusion"),
    "Consolidation": ("focal consolidation", "consolidation"), "Pneumonia": ("pneumonia",),
    "Edema": ("pulmonary edema",), "Lung Opacity": ("focal airspace disease", "focal opacity"),
    "Atelectasis": ("atelectasis",), "Lung Lesion": ("suspicious pulmonary nodule", "pulmonary nodules"),
    "Fracture": ("acute fracture", "displaced rib fracture"), "Pleural Other": ("pleural thickening",),
    "Cardiomegaly": ("cardiomegaly",), "Enlarged Cardiomediastinum": ("mediastinal widening",),
}
_TERSE_NEGATIVE = {"Pneumothorax": "PTX", "Pleural Effusion": "PLEFF", "Pneumonia": "PNA", "Edema": "edema",
                   "Consolidation": "consolidation", "Cardiomegaly": "CM", "Lung Opacity": "opacity",
                   "Atelectasis": "atelectasis", "Lung Lesion": "nodule", "Fracture": "fx",
                   "Enlarged Cardiomediastinum": "widened mediastinum", "Pleural Other": "pleural thickening"}
_ORGAN = {"Pleural Effusion": "PLEURA", "Pneumothorax": "PLEURA", "Pleural Other": "PLEURA",
          "Cardiomegaly": "HEART", "Enlarged Cardiomediastinum": "MEDIASTINUM", "Fracture": "BONES"}
_ORGAN_ORDER = ("LINES/TUBES", "LUNGS", "PLEURA", "HEART", "MEDIASTINUM", "BONES")
_ORGAN_NORMAL = {"LINES/TUBES": "None.", "LUNGS": "Clear.", "PLEURA": "Unremarkable.", "HEART": "Unremarkable.",
                 "MEDIASTINUM": "Unremarkable.", "BONES": "Intact."}


@dataclass(frozen=True)
class Phrase:
    """A piece of report text and the facts it states."""

    text: str
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True)
class _NP:
    """A noun phrase for a present finding: text, its fact (presence/trend set by the sentence) and number."""

    text: str
    fact: Fact
    plural: bool = False
    countable: bool = False  # takes "a"/"an" ("a small effusion"; but "there is atelectasis")


def article(text: str) -> str:
    """"a"/"an" for ``text`` by its first sound ("an 8 mm", "an endotracheal", "a 6 mm", "a small")."""
    word = text.split()[0].lower() if text.split() else ""
    vowel = word[:1] in "aeiou" or word.startswith(("8", "11", "18"))
    return "an" if vowel and not word.startswith(("uni", "eu")) else "a"


class RealisticWriter:
    """Writes the phrases of one report in one style (holds the rng and the style's profile)."""

    def __init__(self, rng: np.random.Generator, style: ReportStyle, has_prior: bool) -> None:
        self.rng = rng
        self.style = style
        self.p = PROFILES[style]
        self.terse = self.p.terse
        self.has_prior = has_prior or self.p.always_prior

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    # -- vocabulary -----------------------------------------------------------------------------------------
    def side(self, lat: Laterality) -> str:
        if self.terse:
            return {Laterality.RIGHT: "R", Laterality.LEFT: "L", Laterality.BILATERAL: "B/L"}[lat]
        return lat.value

    def grade(self, sev: Severity | None, degree: bool = False) -> tuple[str, Grade]:
        sev = sev or Severity.SMALL
        if degree:
            words = {Severity.SMALL: ("mild", "minimal"), Severity.MODERATE: ("moderate",),
                     Severity.LARGE: ("severe", "marked")}[sev]
        else:
            words = {Severity.SMALL: ("small", "tiny", "trace") if not self.terse else ("small",),
                     Severity.MODERATE: ("moderate",), Severity.LARGE: ("large",)}[sev]
        return self.pick(words), _GRADE[sev]

    def lobe(self, lat: Laterality, zone: Zone | None) -> tuple[str, Location]:
        """'right lower lobe' / 'RLL' / 'lingula' / 'bilateral lower lobes' and the location it names."""
        zone = zone or Zone.LOWER
        loc = {Zone.LOWER: Location.LOWER, Zone.MID: Location.MID, Zone.UPPER: Location.UPPER}[zone]
        if lat is Laterality.BILATERAL:
            words = {Zone.LOWER: "lower lobe", Zone.MID: "mid lung", Zone.UPPER: "upper lobe"}[zone]
            return f"{self.side(lat)} {words}", loc
        if self.terse:
            abbr = {(Laterality.RIGHT, Zone.LOWER): "RLL", (Laterality.RIGHT, Zone.MID): "RML",
                    (Laterality.RIGHT, Zone.UPPER): "RUL", (Laterality.LEFT, Zone.LOWER): "LLL",
                    (Laterality.LEFT, Zone.MID): "lingula", (Laterality.LEFT, Zone.UPPER): "LUL"}
            return abbr[(lat, zone)], loc
        if zone is Zone.MID:
            return ("right middle lobe" if lat is Laterality.RIGHT else "lingula"), loc
        return f"{lat.value} {zone.value} lobe", loc

    @staticmethod
    def lobe_noun(lobe: str, lat: Laterality) -> str:
        """The lobe as a noun after "in the": bilateral lobes are plural ("in the bilateral lower lobes")."""
        return lobe + "s" if lat is Laterality.BILATERAL else lobe

    def size_text(self, big: bool) -> tuple[str, float]:
        """A measurement with units: '6 mm' or '1.4 cm', and its value in mm."""
        if big or self.chance(0.5):
            cm = int(self.rng.integers(11, 35)) / 10
            return f"{cm:.1f} cm", round(cm * 10, 1)
        mm = int(self.rng.integers(4, 16))
        return f"{mm} mm", float(mm)

    # -- noun phrases of present findings ---------------------------------------------------------------------
    def finding_np(self, f: Finding) -> _NP:
        """A noun phrase naming a present finding with some of its attributes, and the fact it states."""
        builder = {
            "Pleural Effusion": self._effusion, "Pneumothorax": self._pneumothorax, "Edema": self._edema,
            "Cardiomegaly": self._cardiomegaly, "Enlarged Cardiomediastinum": self._mediastinum,
            "Atelectasis": self._atelectasis, "Lung Lesion": self._lesion, "Fracture": self._fracture,
            "Pleural Other": self._pleural_other,
        }.get(f.observation, self._airspace)
        return builder(f)

    def _effusion(self, f: Finding) -> _NP:
        lat = f.laterality or Laterality.RIGHT
        bilat = lat is Laterality.BILATERAL
        noun = "PLEFF" if self.terse else ("pleural effusions" if bilat else "pleural effusion")
        side = self.side(lat) if bilat or self.terse or self.chance(0.7) else f"{lat.value}-sided"
        fact = Fact("Pleural Effusion", laterality=_SIDE[lat])
        if self.chance(0.75):
            word, grade = self.grade(f.severity)
            return _NP(f"{word} {side} {noun}", replace(fact, severity=grade), bilat, True)
        return _NP(f"{side} {noun}", fact, bilat, True)

    def _pneumothorax(self, f: Finding) -> _NP:
        lat = f.laterality or Laterality.RIGHT
        noun = "PTX" if self.terse else "pneumothorax"
        fact = Fact("Pneumothorax", laterality=_SIDE[lat])
        apical = self.chance(0.4)
        where = " apical" if apical else ""
        if apical:
            fact = replace(fact, location=Location.APICAL)
        if not self.terse and self.chance(self.p.measure_p * 0.5):
            size, mm = self.size_text(big=True)
            return _NP(f"{size} {self.side(lat)}{where} {noun}", replace(fact, size_mm=mm), countable=True)
        word, grade = self.grade(f.severity)
        return _NP(f"{word} {self.side(lat)}{where} {noun}", replace(fact, severity=grade), countable=True)

    def _airspace(self, f: Finding) -> _NP:
        """Consolidation, pneumonia and lung opacity: lobe or zone words."""
        lat, name = f.laterality or Laterality.RIGHT, f.observation
        noun = {"Consolidation": "consolidation", "Pneumonia": "PNA" if self.terse else "pneumonia",
                "Lung Opacity": "opacities" if lat is Laterality.BILATERAL else "opacity"}[name]
        fact = Fact(name, laterality=_SIDE[lat])
        plural = noun == "opacities"
        zone = f.zone or Zone.LOWER
        if not self.terse and name != "Pneumonia" and self.chance(0.3):
            if zone is Zone.LOWER and lat is Laterality.LEFT and self.chance(0.5):
                return _NP(f"retrocardiac {noun}", replace(fact, laterality=None, location=Location.RETROCARDIAC))
            if zone is Zone.MID:
                return _NP(f"{self.side(lat)} perihilar {noun}", replace(fact, location=Location.PERIHILAR), plural)
            if zone is Zone.LOWER:
                return _NP(f"{self.side(lat)} basilar {noun}", replace(fact, location=Location.BASAL), plural)
        lobe, loc = self.lobe(lat, zone)
        fact = replace(fact, location=loc)
        if name == "Lung Opacity" and not self.terse and self.chance(0.4):
            word, grade = self.grade(f.severity)
            return _NP(f"{word} patchy {noun} in the {self.lobe_noun(lobe, lat)}", replace(fact, severity=grade),
                       plural)
        if not self.terse and self.chance(0.4):
            return _NP(f"{noun} in the {self.lobe_noun(lobe, lat)}", fact, plural)
        return _NP(f"{lobe} {noun}", fact, plural)

    def _edema(self, f: Finding) -> _NP:
        word, grade = self.grade(f.severity, degree=True)
        if self.terse:
            return _NP(f"{word} pulm edema", Fact("Edema", severity=grade))
        kind = self.pick(("pulmonary", "interstitial", "perihilar"))
        fact = Fact("Edema", severity=grade, location=Location.PERIHILAR if kind == "perihilar" else None)
        return _NP(f"{word} {kind} edema", fact)

    def _cardiomegaly(self, f: Finding) -> _NP:
        if self.chance(0.6):
            word, grade = self.grade(f.severity, degree=True)
            return _NP(f"{word} cardiomegaly", Fact("Cardiomegaly", severity=grade))
        return _NP("cardiomegaly", Fact("Cardiomegaly"))

    def _mediastinum(self, f: Finding) -> _NP:
        return _NP(self.pick(("widened mediastinum", "mediastinal widening")), Fact("Enlarged Cardiomediastinum"))

    def _atelectasis(self, f: Finding) -> _NP:
        lat = f.laterality or Laterality.RIGHT
        fact = Fact("Atelectasis", laterality=_SIDE[lat])
        if lat is Laterality.BILATERAL and not self.terse and self.chance(0.5):
            return _NP("bibasilar atelectasis", replace(fact, location=Location.BASAL))
        form = int(self.rng.integers(3))
        if form == 0 and not self.terse:
            return _NP(f"atelectasis at the {self.side(lat)} lung base", replace(fact, location=Location.BASAL))
        if form == 1:
            lobe, loc = self.lobe(lat, Zone.LOWER)
            return _NP(f"{lobe} atelectasis", replace(fact, location=loc))
        word, grade = self.grade(f.severity, degree=True)
        return _NP(f"{word} {self.side(lat)} basilar atelectasis",
                   replace(fact, location=Location.BASAL, severity=grade))

    def _lesion(self, f: Finding) -> _NP:
        lat = f.laterality or Laterality.RIGHT
        lobe, loc = self.lobe(lat, f.zone)
        fact = Fact("Lung Lesion", laterality=_SIDE[lat], location=loc)
        noun = "mass" if f.severity is Severity.LARGE else "nodule"
        if self.chance(self.p.measure_p + 0.3):
            size, mm = self.size_text(big=noun == "mass")
            fact = replace(fact, size_mm=mm)
            if self.chance(0.5) and not self.terse:
                return _NP(f"{lobe} {noun} measuring {size}", fact, countable=True)
            text = f"{size} {noun} in the {self.lobe_noun(lobe, lat)}" if not self.terse else f"{size} {lobe} {noun}"
            return _NP(text, fact, countable=True)
        return _NP(f"{lobe} {'pulmonary ' if not self.terse else ''}{noun}", fact, countable=True)

    def _fracture(self, f: Finding) -> _NP:
        lat = f.laterality or Laterality.RIGHT
        noun = "rib fx" if self.terse else self.pick(("rib fracture", "posterior rib fracture"))
        return _NP(f"{self.side(lat)} {noun}", Fact("Fracture", laterality=_SIDE[lat]), countable=True)

    def _pleural_other(self, f: Finding) -> _NP:
        lat = f.laterality or Laterality.RIGHT
        fact = Fact("Pleural Other", laterality=_SIDE[lat])
        if self.chance(0.4):
            return _NP(f"{self.side(lat)} apical pleural thickening", replace(fact, location=Location.APICAL))
        return _NP(f"{self.side(lat)} pleural thickening", fact)

    # -- sentences about findings -----------------------------------------------------------------------------
    def trend(self) -> Trend | None:
        if not self.has_prior or not self.chance(self.p.trend_p):
            return None
        return self.pick((Trend.STABLE, Trend.STABLE, Trend.STABLE, Trend.WORSE, Trend.BETTER, Trend.NEW))

    def positive(self, f: Finding) -> Phrase:
        """One sentence stating a present finding (maybe with its trend)."""
        trend = self.trend()
        if f.observation in ("Cardiomegaly", "Enlarged Cardiomediastinum") and not self.terse and self.chance(0.4):
            return self._cardiac_predicate(f, trend)
        np_ = self.finding_np(f)
        fact = replace(np_.fact, presence=Presence.POSITIVE, trend=trend)
        be, has = ("are", "have") if np_.plural else ("is", "has")
        if trend is None:
            forms = [np_.text] if self.terse else \
                [np_.text, f"there {be} {article(np_.text) + ' ' if np_.countable and not np_.plural else ''}{np_.text}",
                 f"{np_.text} {be} {self.pick(('seen', 'noted', 'present'))}"]
            return Phrase(self.pick(forms), (fact,))
        prefix = f"{self.pick(_TREND_PREFIX[trend])} {np_.text}"
        if self.terse or trend is Trend.NEW:
            return Phrase(prefix, (fact,))
        predicate = self.pick(_TREND_PREDICATE[trend]).replace("is ", f"{be} ").replace("has ", f"{has} ")
        forms = [prefix, f"{np_.text} {predicate}"]
        if self.chance(self.p.comparison_p * 0.5):
            forms = [f"compared to {self.pick((self.p.deid, 'the prior study'))}, the {np_.text} {predicate}"]
        return Phrase(self.pick(forms), (fact,))

    def _cardiac_predicate(self, f: Finding, trend: Trend | None) -> Phrase:
        if f.observation == "Enlarged Cardiomediastinum":
            verb = "remains" if trend is Trend.STABLE else "is"
            text = f"the {self.pick(('mediastinum', 'cardiomediastinal silhouette'))} {verb} widened"
            return Phrase(text, (Fact(f.observation, trend=Trend.STABLE if verb == "remains" else None),))
        verb = "remains" if trend is Trend.STABLE else "is"
        fact = Fact("Cardiomegaly", trend=Trend.STABLE if verb == "remains" else None)
        subject = self.pick(("the heart", "heart size", "the cardiac silhouette"))
        if self.chance(0.6):
            word, grade = self.grade(f.severity, degree=True)
            return Phrase(f"{subject} {verb} {word}ly enlarged", (replace(fact, severity=grade),))
        return Phrase(f"{subject} {verb} enlarged", (fact,))

    def uncertain(self, f: Finding) -> Phrase:
        """One hedged sentence ("Possible ...", "... cannot be excluded", "? RLL PNA")."""
        if f.observation == "Cardiomegaly" and not self.terse and self.chance(0.4):
            word, grade = self.grade(f.severity, degree=True)
            return Phrase(f"the heart may be {word}ly enlarged",
                          (Fact("Cardiomegaly", Presence.UNCERTAIN, severity=grade),))
        np_ = self.finding_np(f)
        fact = replace(np_.fact, presence=Presence.UNCERTAIN)
        if self.terse:
            return Phrase(self.pick((f"? {np_.text}", f"cannot r/o {np_.text}", f"possible {np_.text}")), (fact,))
        verb = "are" if np_.plural else "is"
        forms = (f"possible {np_.text}", f"questionable {np_.text}", f"suspected {np_.text}",
                 f"cannot exclude {np_.text}", f"{np_.text} cannot be excluded", f"{np_.text} {verb} not excluded")
        return Phrase(self.pick(forms), (fact,))

    def opacity_with_hedged_pneumonia(self, opacity: Finding) -> Phrase:
        """"Left basilar opacity, possibly pneumonia." — a present opacity and a hedged pneumonia."""
        np_ = self.finding_np(opacity)
        first = replace(np_.fact, presence=Presence.POSITIVE)
        hedge = self.pick(("{o}, possibly pneumonia", "{o} concerning for pneumonia",
                           "{o}; pneumonia cannot be excluded", "{o}, which may represent pneumonia"))
        if self.terse:
            hedge = self.pick(("{o}, ? PNA", "{o}, cannot r/o PNA"))
        return Phrase(hedge.format(o=np_.text), (first, Fact("Pneumonia", Presence.UNCERTAIN)))

    # -- negative, normal and content-free sentences ----------------------------------------------------------
    def negatives(self, names: list[str]) -> list[Phrase]:
        """Sentences denying ``names``: cardiac statements, "No A, B, or C." lists and single negations."""
        names = list(names)
        out: list[Phrase] = []
        cardiac = sorted(n for n in names if n in ("Cardiomegaly", "Enlarged Cardiomediastinum"))
        if len(cardiac) == 2 and not self.terse and self.chance(0.5):
            text = self.pick(("heart size and mediastinal contours are normal",
                              "the heart and mediastinum are normal",
                              "heart size and mediastinal contours are within normal limits"))
            out.append(Phrase(text, tuple(Fact(n, Presence.NEGATIVE) for n in cardiac)))
            cardiac = []
        for name in cardiac:
            out.append(self._cardiac_negative(name))
        rest = [n for n in names if n not in ("Cardiomegaly", "Enlarged Cardiomediastinum")]
        while rest:
            k = 1
            if len(rest) >= 2 and self.chance(self.p.negation_list_p):
                k = int(self.rng.integers(2, min(4, len(rest)) + 1))
            group, rest = rest[:k], rest[k:]
            out.append(self._negation(group))
        return out

    def _cardiac_negative(self, name: str) -> Phrase:
        fact = (Fact(name, Presence.NEGATIVE),)
        if self.terse:
            return Phrase(f"no {_TERSE_NEGATIVE[name]}", fact)
        if name == "Cardiomegaly":
            return Phrase(self.pick(("heart size is normal", "the heart is normal in size", "normal heart size",
                                     "the cardiac silhouette is within normal limits", "the heart is not enlarged",
                                     "no cardiomegaly")), fact)
        return Phrase(self.pick(("the mediastinal contours are normal", "the mediastinum is unremarkable",
                                 "normal cardiomediastinal silhouette", "no mediastinal widening")), fact)

    def _negation(self, group: list[str]) -> Phrase:
        facts = tuple(Fact(n, Presence.NEGATIVE) for n in group)
        nouns = [_TERSE_NEGATIVE[n] if self.terse else self.pick(_NEGATIVE_NOUNS[n]) for n in group]
        if len(nouns) == 1:
            noun = nouns[0]
            if self.terse:
                return Phrase(f"no {noun}", facts)
            singular = not noun.endswith("nodules")
            forms = [f"no {noun}", f"there is no {noun}", f"no evidence of {noun}"]
            forms += [f"no {noun} is seen", f"{noun} is not seen"] if singular else []
            return Phrase(self.pick(forms), facts)
        oxford = "," if self.chance(0.5) and len(nouns) > 2 else ""
        listed = ", ".join(nouns[:-1]) + f"{oxford} or {nouns[-1]}"
        lead = "no" if self.terse else self.pick(("no", "no", "there is no", "no evidence of"))
        return Phrase(f"{lead} {listed}", facts)

    def normal(self) -> Phrase:
        """A normal-study statement (No Finding)."""
        if self.terse:
            text = self.pick(("NAD", "no acute process", "normal CXR"))
        elif self.p.deid == "XXXX":
            text = self.pick(("no acute cardiopulmonary abnormality", "no active disease",
                              "no acute cardiopulmonary disease"))
        else:
            text = self.pick(("no acute cardiopulmonary process", "no acute intrathoracic process",
                              "normal chest radiograph", "no acute cardiopulmonary abnormality"))
        return Phrase(text, (Fact(NO_FINDING),))

    def lungs_clear(self) -> Phrase:
        return Phrase(self.pick(("the lungs are clear", "lungs are well expanded and clear",
                                 "the lungs are clear bilaterally")))

    def filler(self) -> Phrase:
        """A content-free sentence: bones, vascularity, or an Open-I de-identified run."""
        options = ["the visualized osseous structures are unremarkable", "pulmonary vascularity is normal",
                   "no acute osseous abnormality"]
        if self.p.deid == "XXXX":
            options += ["XXXX XXXX are intact", "the XXXX are unremarkable"]
        return Phrase(self.pick(options))

    def comparison(self) -> Phrase:
        d = self.p.deid
        if self.terse:
            return Phrase(self.pick((f"vs prior {d}", f"compared w/ {d}")))
        return Phrase(self.pick((f"comparison is made to the prior study from {d}",
                                 f"compared to {d}, there is no significant interval change",
                                 f"as compared to the previous radiograph of {d}, there is no relevant change",
                                 "PA and lateral views of the chest were obtained",
                                 "portable AP view of the chest")))

    def notification(self) -> Phrase:
        d = self.p.deid
        return Phrase(self.pick((f"findings were discussed with Dr. {d} by telephone at {d}",
                                 f"these findings were communicated to Dr. {d} at {d} on {d}")))

    # -- devices ----------------------------------------------------------------------------------------------
    def device(self, d: PlacedDevice) -> Phrase:
        """A device line with its position ("ET tube terminates 4 cm above the carina.")."""
        subject = _DEVICE_SUBJECT[d.device]
        fact = Fact(subject)
        side = _SIDE[d.side] if d.side else None
        if d.device is Device.ETT:
            return self._ett(fact)
        if d.device is Device.NG_TUBE:
            name = self.pick(("NGT",) if self.terse else ("Nasogastric tube", "NG tube", "Enteric tube"))
            if self.chance(0.75):
                where = "in stomach" if self.terse else self.pick(("tip is in the stomach", "terminates in the "
                                                                   "stomach", "courses below the diaphragm into "
                                                                   "the stomach"))
                return Phrase(f"{name} {where}", (replace(fact, position=DevicePosition.STOMACH),))
            return Phrase(f"{name} in {'place' if self.terse else 'appropriate position'}",
                          (replace(fact, position=DevicePosition.STANDARD),))
        if d.device is Device.CENTRAL_LINE:
            return self._central_line(fact, d.side or Laterality.RIGHT)
        if d.device is Device.PACEMAKER:
            options = [(f"{'PPM' if self.terse else 'pacemaker'} in place", DevicePosition.STANDARD, None, None),
                       ("left-sided pacemaker leads terminate in the right ventricle", DevicePosition.RIGHT_VENTRICLE,
                        Side.LEFT, None),
                       ("dual-chamber pacemaker is unchanged", None, None, Trend.STABLE)]
            text, pos, lat, trend = options[0] if self.terse else self.pick(options)
            return Phrase(text, (replace(fact, position=pos, laterality=lat, trend=trend),))
        word = self.side(d.side or Laterality.RIGHT)
        if not self.terse and self.chance(0.4):
            return Phrase(f"{word}-sided chest tube is unchanged", (replace(fact, laterality=side, trend=Trend.STABLE),))
        return Phrase(f"{word} chest tube in place" if self.terse else f"{word} chest tube is in place",
                      (replace(fact, laterality=side, position=DevicePosition.STANDARD),))

    def _ett(self, fact: Fact) -> Phrase:
        name = "ETT" if self.terse else self.pick(("Endotracheal tube", "ET tube", "The endotracheal tube"))
        if self.chance(0.6):
            cm = self.pick((2, 3, 3.5, 4, 4.5, 5, 6))
            dist = f"{cm:g} cm"
            fact = replace(fact, position=DevicePosition.ABOVE_CARINA, size_mm=round(cm * 10, 1))
            if self.terse:
                return Phrase(f"ETT {dist} above carina", (fact,))
            verb = self.pick(("terminates", "tip is", "tip terminates"))
            return Phrase(f"{name} {verb} {dist} above the carina", (fact,))
        if not self.terse and self.chance(0.3):
            return Phrase(f"{name} is unchanged in position", (replace(fact, trend=Trend.STABLE),))
        where = "in place" if self.terse else self.pick(("is in standard position", "is in appropriate position",
                                                          "in good position"))
        return Phrase(f"{name} {where}", (replace(fact, position=DevicePosition.STANDARD),))

    def _central_line(self, fact: Fact, lat: Laterality) -> Phrase:
        side = _SIDE[lat]
        pos_text, pos = self.pick((("SVC", DevicePosition.SVC), ("mid SVC", DevicePosition.SVC),
                                   ("superior vena cava", DevicePosition.SVC),
                                   ("cavoatrial junction", DevicePosition.CAVOATRIAL),
                                   ("right atrium", DevicePosition.RIGHT_ATRIUM)))
        if self.terse:
            return Phrase(f"{self.side(lat)} IJ CVC tip in {pos_text}",
                          (replace(fact, laterality=side, position=pos),))
        if self.chance(0.35):
            return Phrase(f"{lat.value}-sided PICC terminates in the {pos_text}",
                          (Fact("PICC", laterality=side, position=pos),))
        access = self.pick(("internal jugular", "subclavian", "IJ"))
        noun = "central venous catheter" if access != "IJ" else "line"
        verb = self.pick(("terminates in the", "tip is in the", "tip projects over the"))
        return Phrase(f"{lat.value} {access} {noun} {verb} {pos_text}",
                      (replace(fact, laterality=side, position=pos),))


# ------------------------------------------------------------------------------------------------- assembly
def _states(facts: tuple[Fact, ...]) -> tuple[tuple[str, LabelState], ...]:
    """The label states a sentence's facts assert (devices → Support Devices)."""
    state = {Presence.POSITIVE: LabelState.POSITIVE, Presence.UNCERTAIN: LabelState.UNCERTAIN,
             Presence.NEGATIVE: LabelState.NEGATIVE}
    out = []
    for f in facts:
        out.append(("Support Devices", LabelState.POSITIVE) if f.is_device else (f.subject, state[f.presence]))
    return tuple(out)


def _finish(text: str, upper: bool, period: bool = True) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    if period and not text.endswith((".", "?")):
        text += "."
    return text.upper() if upper else text


def _describe(w: RealisticWriter, present: list[Finding]) -> list[Phrase]:
    """One phrase per present finding; an opacity and a hedged pneumonia sometimes share one sentence."""
    names = {f.observation: f for f in present}
    combined = (names.get("Lung Opacity") is not None and names["Lung Opacity"].state is LabelState.POSITIVE
                and names.get("Pneumonia") is not None and names["Pneumonia"].state is LabelState.UNCERTAIN
                and w.chance(0.6))
    out = []
    for f in present:
        if combined and f.observation == "Pneumonia":
            continue
        if combined and f.observation == "Lung Opacity":
            out.append(w.opacity_with_hedged_pneumonia(f))
        else:
            out.append(w.positive(f) if f.state is LabelState.POSITIVE else w.uncertain(f))
    return out


def _findings_phrases(w: RealisticWriter, present: list[Finding], negated: list[str],
                      devices: tuple[PlacedDevice, ...]) -> list[Phrase]:
    out = []
    if w.has_prior and w.chance(w.p.comparison_p):
        out.append(w.comparison())
    out += [w.device(d) for d in devices]
    out += _describe(w, present)
    out += w.negatives(negated)
    lung = {"Lung Opacity", "Consolidation", "Edema", "Pneumonia", "Atelectasis", "Lung Lesion"}
    if not any(f.observation in lung for f in present) and w.chance(0.7):
        out.append(w.lungs_clear())
    if w.chance(0.3):
        out.append(w.filler())
    return out or [w.lungs_clear()]  # a findings section is never empty


def _templated_findings(w: RealisticWriter, present: list[Finding], negated: list[str],
                        devices: tuple[PlacedDevice, ...], upper: bool) -> list[str | tuple[str, Phrase]]:
    """Findings under ALL-CAPS organ headers ("LUNGS: ...", "PLEURA: ..."): (header, phrase) or bare phrase."""
    groups: dict[str, list[Phrase]] = {organ: [] for organ in _ORGAN_ORDER}
    groups["LINES/TUBES"] = [w.device(d) for d in devices]
    for f in present:
        groups[_ORGAN.get(f.observation, "LUNGS")].append(
            w.positive(f) if f.state is LabelState.POSITIVE else w.uncertain(f))
    for organ in _ORGAN_ORDER:
        names = [n for n in negated if _ORGAN.get(n, "LUNGS") == organ]
        groups[organ] += w.negatives(names)
    out: list = []
    for organ in _ORGAN_ORDER:
        phrases = groups[organ] or ([Phrase(_ORGAN_NORMAL[organ])] if organ in ("LINES/TUBES", "LUNGS", "BONES")
                                    else [])
        for i, ph in enumerate(phrases):
            out.append((organ if i == 0 else "", ph))
    return out


def _impression_phrases(w: RealisticWriter, present: list[Finding], negated: list[str],
                        devices: tuple[PlacedDevice, ...]) -> list[Phrase]:
    out = []
    standalone = not w.p.findings
    if standalone and w.has_prior and w.chance(w.p.comparison_p * 0.5):
        out.append(w.comparison())
    out += _describe(w, present)
    if not present:
        out.append(w.normal())
    if standalone:
        out += w.negatives(negated) + [w.device(d) for d in devices]
    elif negated and present and w.chance(0.3):
        out += w.negatives(negated[:1])
    if present and w.chance(0.1):
        out.append(w.notification())
    return out


def _list_items(w: RealisticWriter, phrases: list[Phrase], upper: bool) -> list[str]:
    """The impression's sentences with their list markers (numbered / bulleted) or as prose."""
    formats, weights = zip(*w.p.list_formats, strict=True)
    fmt = formats[int(w.rng.choice(len(formats), p=np.asarray(weights) / sum(weights)))]
    if fmt is ListFormat.PROSE or (fmt is ListFormat.NUMBERED and len(phrases) < 2 and w.chance(0.5)):
        return [_finish(ph.text, upper) for ph in phrases]
    if fmt is ListFormat.NUMBERED:
        closer = w.pick((".", ".", ")"))
        period = w.chance(0.7)
        return [f"{i}{closer} {_finish(ph.text, upper, period)}" for i, ph in enumerate(phrases, 1)]
    bullet = w.pick(("-", "-", "*"))
    return [f"{bullet} {_finish(ph.text, upper)}" for ph in phrases]


def _header_lines(w: RealisticWriter) -> list[str]:
    """EXAMINATION / INDICATION or HISTORY / COMPARISON lines of the full report (never in findings/impression)."""
    d = w.p.deid
    lines = []
    if w.chance(0.5):
        lines.append("EXAMINATION: " + w.pick(("CHEST (PA AND LAT)", "CHEST (PORTABLE AP)", "CHEST 2 VIEWS")))
    reason = w.pick((f"{d}-year-old with cough and fever, evaluate for pneumonia", f"{d} with shortness of breath",
                     "chest pain", f"{d} s/p line placement, eval position"))
    lines.append(f"{w.pick(('INDICATION', 'HISTORY', 'CLINICAL HISTORY'))}: {reason}.")
    lines.append(f"COMPARISON: {d}." if w.has_prior else "COMPARISON: None.")
    return lines


def write_realistic_report(findings: dict[str, Finding], devices: tuple[PlacedDevice, ...], style: ReportStyle,
                           has_prior: bool, rng: np.random.Generator) -> ReportText:
    """Write a report in one of the :data:`REALISTIC_STYLES`; every mention carries its facts."""
    if style not in PROFILES:
        raise ValueError(f"style {style.value!r} is not a realistic style ({[s.value for s in PROFILES]})")
    w = RealisticWriter(rng, style, has_prior)
    upper = w.chance(w.p.upper_p)
    present = [f for f in findings.values() if f.present and f.observation not in ("No Finding", "Support Devices")]
    negated = [f.observation for f in findings.values() if f.state is LabelState.NEGATIVE]
    rng.shuffle(negated)
    findings_m: list[Mention] = []
    impression_m: list[Mention] = []
    if w.p.findings and w.p.organ_headers:
        for organ, ph in _templated_findings(w, present, negated, devices, upper):
            text = f"{organ}: {_finish(ph.text, upper)}" if organ else _finish(ph.text, upper)
            findings_m.append(Mention(Section.FINDINGS, text, _states(ph.facts), ph.facts))
    elif w.p.findings:
        for ph in _findings_phrases(w, present, negated, devices):
            findings_m.append(Mention(Section.FINDINGS, _finish(ph.text, upper), _states(ph.facts), ph.facts))
    if w.p.impression:
        phrases = _impression_phrases(w, present, negated, devices)
        for text, ph in zip(_list_items(w, phrases, upper), phrases, strict=True):
            impression_m.append(Mention(Section.IMPRESSION, text, _states(ph.facts), ph.facts))
    findings_text = " ".join(m.sentence for m in findings_m) or None
    impression_text = " ".join(m.sentence for m in impression_m) or None
    parts = _header_lines(w)
    if findings_text:
        parts.append(f"FINDINGS: {findings_text}")
    if impression_text:
        parts.append(f"IMPRESSION: {impression_text}")
    return ReportText(findings_text, impression_text, "\n\n".join(parts), tuple(findings_m + impression_m))
