"""Radiology report text written from a study's findings, and the labels that text implies.

Every sentence is produced together with the label states it asserts (a :class:`Mention`), so the 14 labels
are derived from what the report *says*: a negated mention ("no pneumothorax") gives NEGATIVE, a hedged one
("cannot exclude pneumonia", "possible ...") UNCERTAIN, an unwritten observation NOT_MENTIONED, and
"No Finding" is POSITIVE only when the impression states a normal study (no pathology other than devices).

Styles: structured FINDINGS + IMPRESSION (MIMIC-like, with ``___`` de-identification and comparison lines),
impression-only, and terse abbreviation-heavy hospital impressions ("B/L PLEFF, small. No PTX. ETT in place.").
Lateralised findings always carry their side (``right``/``left``/``bilateral`` or R/L/B/L, RLL, LUL, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
from cxr.labels import OBSERVATION_INDEX, LabelState, empty_labels

#: Words that name each side in the generated text (full words and the abbreviations used).
LATERALITY_TERMS: dict[Laterality, tuple[str, ...]] = {
    Laterality.RIGHT: ("right", "r", "rt", "rll", "rml", "rul"),
    Laterality.LEFT: ("left", "l", "lt", "lll", "lul", "lingula", "lingular"),
    Laterality.BILATERAL: ("bilateral", "b/l", "bibasilar", "both"),
}
#: Cues a test (or a reader) can use to recognise negated and hedged sentences.
NEGATION_CUES: tuple[str, ...] = ("no ", "without", "normal", "resolved", "negative for")
HEDGE_CUES: tuple[str, ...] = ("possible", "cannot exclude", "cannot be excluded", "may ", "?", "questionable",
                               "not excluded", "cannot r/o", "versus", "suspected")

PATHOLOGIES: tuple[str, ...] = tuple(n for n in OBSERVATION_INDEX if n not in ("No Finding", "Support Devices"))


@dataclass(frozen=True)
class ReportText:
    """A generated report: sections, the assembled text, and the mentions the labels come from."""

    findings: str | None
    impression: str | None  # None only for findings-only reports (realistic styles)
    full_text: str
    mentions: tuple[Mention, ...]


def labels_from_mentions(mentions: tuple[Mention, ...] | list[Mention]) -> np.ndarray:
    """Aggregate mentions into int8[14] labels: POSITIVE beats UNCERTAIN beats NEGATIVE (CheXpert rule)."""
    rank = {LabelState.NOT_MENTIONED: 0, LabelState.NEGATIVE: 1, LabelState.UNCERTAIN: 2, LabelState.POSITIVE: 3}
    labels = empty_labels()
    for mention in mentions:
        for name, state in mention.states:
            i = OBSERVATION_INDEX[name]
            if rank[state] > rank[LabelState(int(labels[i]))]:
                labels[i] = state
    return labels


def section_labels(mentions: tuple[Mention, ...], section: Section) -> np.ndarray:
    """Labels derived from one section only (as CheXbert's findings_fixed / impression_fixed files)."""
    return labels_from_mentions([m for m in mentions if m.section is section])


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Writer:
    """Holds the rng and style; turns findings into sentences."""

    def __init__(self, rng: np.random.Generator, style: ReportStyle) -> None:
        self.rng = rng
        self.terse = style is ReportStyle.HOSPITAL

    def choice(self, options: list[str] | tuple[str, ...]) -> str:
        return options[int(self.rng.integers(len(options)))]

    # -- vocabulary -------------------------------------------------------------------------------------
    def side(self, lat: Laterality) -> str:
        if self.terse:
            return {Laterality.RIGHT: "R", Laterality.LEFT: "L", Laterality.BILATERAL: "B/L"}[lat]
        return lat.value

    def size(self, sev: Severity | None, kind: str = "size") -> str:
        sev = sev or Severity.SMALL
        if kind == "degree":
            return {Severity.SMALL: "mild", Severity.MODERATE: "moderate", Severity.LARGE: "severe"}[sev]
        return {Severity.SMALL: "small", Severity.MODERATE: "moderate", Severity.LARGE: "large"}[sev]

    def lobe(self, lat: Laterality, zone: Zone | None) -> str:
        zone = zone or Zone.LOWER
        if lat is Laterality.BILATERAL:
            return {Zone.LOWER: "bilateral lower lobes", Zone.MID: "bilateral mid lungs",
                    Zone.UPPER: "bilateral upper lobes"}[zone] if not self.terse else \
                {Zone.LOWER: "B/L lower lobes", Zone.MID: "B/L mid lungs", Zone.UPPER: "B/L upper lobes"}[zone]
        if self.terse:
            return {(Laterality.RIGHT, Zone.LOWER): "RLL", (Laterality.RIGHT, Zone.MID): "RML",
                    (Laterality.RIGHT, Zone.UPPER): "RUL", (Laterality.LEFT, Zone.LOWER): "LLL",
                    (Laterality.LEFT, Zone.MID): "lingula", (Laterality.LEFT, Zone.UPPER): "LUL"}[(lat, zone)]
        if zone is Zone.MID:
            return "right middle lobe" if lat is Laterality.RIGHT else "lingula"
        return f"{lat.value} {zone.value} lobe"

    # -- one finding ------------------------------------------------------------------------------------
    def positive(self, f: Finding, impression: bool) -> str:
        name, lat, sev = f.observation, f.laterality or Laterality.RIGHT, f.severity
        if self.terse:
            s, z = self.side(lat), self.size(sev)
            return {
                "Pleural Effusion": self.choice([f"{s} PLEFF, {z}", f"{z} {s} pleural eff", f"{s} effusion, {z}"]),
                "Pneumothorax": self.choice([f"{z} {s} PTX", f"{s} PTX, {z}", f"{s} apical PTX"]),
                "Consolidation": f"{self.lobe(lat, f.zone)} consolidation",
                "Pneumonia": self.choice([f"{self.lobe(lat, f.zone)} PNA", f"PNA {self.lobe(lat, f.zone)}"]),
                "Lung Opacity": self.choice([f"{self.lobe(lat, f.zone)} opacity", f"{s} opacity, {z}"]),
                "Edema": self.choice([f"{self.size(sev, 'degree')} pulm edema", "pulm edema c/w CHF"]),
                "Cardiomegaly": self.choice(["cardiomegaly", f"{self.size(sev, 'degree')} cardiomegaly", "CM"]),
                "Enlarged Cardiomediastinum": "widened mediastinum",
                "Atelectasis": self.choice([f"{s} basilar atelectasis", f"{s} base atelectasis"]),
                "Lung Lesion": self.choice([f"{self.lobe(lat, f.zone)} nodule", f"{s} lung nodule"]),
                "Fracture": self.choice([f"{s} rib fx", f"{s} rib fracture"]),
                "Pleural Other": f"{s} pleural thickening",
            }[name]
        s, z, lobe = self.side(lat), self.size(sev), self.lobe(lat, f.zone)
        deg = self.size(sev, "degree")
        bilat = lat is Laterality.BILATERAL
        effusion = "pleural effusions" if bilat else "pleural effusion"
        options = {
            "Pleural Effusion": ([f"{z} {s} {effusion}"] if impression else
                                 [f"there is a {z} {s} {effusion}" if not bilat else f"there are {z} {s} {effusion}",
                                  f"{z} {s} {effusion} with blunting of the costophrenic angle",
                                  f"{s} {effusion}, {z} in size"]),
            "Pneumothorax": ([f"{z} {s} pneumothorax"] if impression else
                             [f"there is a {z} {s} apical pneumothorax", f"{z} {s} pneumothorax is seen",
                              f"{s} pneumothorax, {z}, with a visible pleural line"]),
            "Consolidation": ([f"{lobe} consolidation"] if impression else
                              [f"{z} focal consolidation in the {lobe}", f"there is consolidation in the {lobe}"]),
            "Pneumonia": ([f"{lobe} pneumonia"] if impression else
                          [f"findings are consistent with {lobe} pneumonia",
                           f"airspace disease in the {lobe} compatible with pneumonia"]),
            "Lung Opacity": ([f"{lobe} opacity"] if impression else
                             [f"patchy opacity in the {lobe}", f"{z} area of opacity in the {lobe}"]),
            "Edema": ([f"{deg} pulmonary edema", f"{deg} pulmonary edema consistent with CHF"] if impression else
                      [f"{deg} pulmonary edema with perihilar haziness",
                       f"vascular congestion and {deg} interstitial pulmonary edema"]),
            "Cardiomegaly": ([f"{deg} cardiomegaly"] if impression else
                             [f"the heart is {deg}ly enlarged" if deg != "mild" else "the heart is mildly enlarged",
                              f"{deg} cardiomegaly"]),
            "Enlarged Cardiomediastinum": (["widened mediastinum"] if impression else
                                           ["the cardiomediastinal silhouette is widened",
                                            "the mediastinum is enlarged"]),
            "Atelectasis": ([f"{s} basilar atelectasis"] if impression else
                            [f"{s} basilar atelectasis", f"linear atelectasis at the {s} lung base"]),
            "Lung Lesion": ([f"{lobe} pulmonary nodule"] if impression else
                            [f"a {self.choice(['6 mm', '9 mm', '1.2 cm'])} nodule in the {lobe}",
                             f"there is a pulmonary nodule in the {lobe}"]),
            "Fracture": ([f"{s} rib fracture"] if impression else
                         [f"acute fracture of a {s} lateral rib", f"there is a {s} rib fracture"]),
            "Pleural Other": ([f"{s} pleural thickening"] if impression else
                              [f"{s} pleural thickening", f"smooth {s} pleural thickening along the lateral chest wall"]),
        }[name]
        return self.choice(options)

    def uncertain(self, f: Finding) -> str:
        name, lat = f.observation, f.laterality or Laterality.RIGHT
        s, lobe = self.side(lat), self.lobe(lat, f.zone)
        if self.terse:
            return {
                "Pleural Effusion": f"? {s} PLEFF", "Pneumothorax": f"? small {s} PTX",
                "Consolidation": f"? {lobe} consolidation", "Lung Opacity": f"? {lobe} opacity",
                "Pneumonia": self.choice([f"? {lobe} PNA", f"cannot r/o PNA {lobe}"]), "Edema": "? pulm edema",
                "Cardiomegaly": "? cardiomegaly", "Enlarged Cardiomediastinum": "? widened mediastinum",
                "Atelectasis": f"? {s} basilar atelectasis", "Lung Lesion": f"? {lobe} nodule",
                "Fracture": f"? {s} rib fx", "Pleural Other": f"? {s} pleural thickening",
            }[name]
        options = {
            "Pleural Effusion": [f"possible small {s} pleural effusion",
                                 f"a small {s} pleural effusion cannot be excluded"],
            "Pneumothorax": [f"possible tiny {s} apical pneumothorax",
                             f"a small {s} apical pneumothorax cannot be excluded"],
            "Consolidation": [f"possible consolidation in the {lobe}", f"questionable {lobe} consolidation"],
            "Pneumonia": [f"pneumonia in the {lobe} cannot be excluded", f"possible {lobe} pneumonia",
                          f"cannot exclude early pneumonia in the {lobe}"],
            "Lung Opacity": [f"questionable opacity in the {lobe}", f"possible opacity in the {lobe}"],
            "Edema": ["possible mild interstitial edema", "mild pulmonary edema cannot be excluded"],
            "Cardiomegaly": ["possible mild cardiomegaly", "the heart may be mildly enlarged"],
            "Enlarged Cardiomediastinum": ["the mediastinum may be mildly widened",
                                           "possible widening of the mediastinum"],
            "Atelectasis": [f"possible {s} basilar atelectasis", f"{s} basilar atelectasis is not excluded"],
            "Lung Lesion": [f"possible nodule in the {lobe}", f"questionable nodular density in the {lobe}"],
            "Fracture": [f"possible nondisplaced {s} rib fracture", f"questionable {s} rib fracture"],
            "Pleural Other": [f"possible {s} pleural thickening", f"questionable {s} pleural thickening"],
        }[name]
        return self.choice(options)

    def negative(self, name: str) -> str:
        if self.terse:
            return {"Pneumothorax": "no PTX", "Pleural Effusion": "no PLEFF", "Pneumonia": "no PNA",
                    "Edema": "no CHF", "Consolidation": "no consolidation", "Cardiomegaly": "no CM",
                    "Enlarged Cardiomediastinum": "no widened mediastinum", "Fracture": "no fx",
                    "Lung Lesion": "no nodule", "Lung Opacity": "no opacity", "Atelectasis": "no atelectasis",
                    "Pleural Other": "no pleural thickening"}[name]
        options = {
            "Pneumothorax": ["no pneumothorax", "there is no pneumothorax", "no pneumothorax is seen"],
            "Pleural Effusion": ["no pleural effusion", "there is no pleural effusion", "no effusion is seen"],
            "Pneumonia": ["no evidence of pneumonia", "no findings to suggest pneumonia"],
            "Edema": ["no pulmonary edema", "there is no pulmonary edema"],
            "Consolidation": ["no focal consolidation", "there is no focal consolidation"],
            "Cardiomegaly": ["heart size is normal", "the cardiac silhouette is normal in size", "no cardiomegaly"],
            "Enlarged Cardiomediastinum": ["the mediastinal contours are normal",
                                           "normal cardiomediastinal silhouette"],
            "Fracture": ["no acute displaced rib fracture", "no acute fracture is seen"],
            "Lung Lesion": ["no suspicious pulmonary nodule", "no pulmonary nodules"],
            "Lung Opacity": ["no focal opacity", "no focal airspace opacity"],
            "Atelectasis": ["no atelectasis"],
            "Pleural Other": ["no pleural thickening"],
        }[name]
        return self.choice(options)

    def device(self, d: PlacedDevice) -> str:
        side = d.side or Laterality.RIGHT
        if self.terse:
            return {Device.ETT: self.choice(["ETT in place", "ETT 4 cm above carina"]),
                    Device.NG_TUBE: self.choice(["NGT in stomach", "NGT in place"]),
                    Device.CENTRAL_LINE: f"{self.side(side)} CVL tip in SVC",
                    Device.PACEMAKER: self.choice(["PPM leads unchanged", "pacer in place"]),
                    Device.CHEST_TUBE: f"{self.side(side)} chest tube in place"}[d.device]
        return {
            Device.ETT: self.choice(["endotracheal tube terminates 4 cm above the carina",
                                     "the endotracheal tube is in standard position"]),
            Device.NG_TUBE: self.choice(["nasogastric tube courses below the diaphragm into the stomach",
                                         "enteric tube tip is in the stomach"]),
            Device.CENTRAL_LINE: f"{side.value} subclavian central venous catheter terminates in the SVC",
            Device.PACEMAKER: self.choice(["left chest wall pacemaker with leads in the right heart",
                                           "dual-lead pacemaker is unchanged"]),
            Device.CHEST_TUBE: f"{side.value} chest tube is in place",
        }[d.device]


def _sentence(text: str, terse: bool, upper: bool) -> str:
    text = _cap(text.strip())
    if upper:
        text = text.upper()
    return text if text.endswith((".", "?")) else text + "."


@dataclass
class _ReportBuilder:
    """One report under construction: the writer, its style switches and the mentions of each section."""

    w: _Writer
    rng: np.random.Generator
    terse: bool
    upper: bool
    negated: list[str]
    devices: tuple[PlacedDevice, ...]
    has_prior: bool
    findings_m: list[Mention] = field(default_factory=list)
    impression_m: list[Mention] = field(default_factory=list)

    def add(self, section: Section, text: str, states: list[tuple[str, LabelState]]) -> None:
        bucket = self.findings_m if section is Section.FINDINGS else self.impression_m
        bucket.append(Mention(section, _sentence(text, self.terse, self.upper), tuple(states)))

    def describe(self, f: Finding, section: Section) -> None:
        if f.state is LabelState.POSITIVE:
            self.add(section, self.w.positive(f, section is Section.IMPRESSION), [(f.observation, f.state)])
        else:
            self.add(section, self.w.uncertain(f), [(f.observation, f.state)])

    def negations(self, section: Section) -> None:
        negated, i = self.negated, 0
        while i < len(negated):
            # Two negations sometimes share one sentence ("No pleural effusion or pneumothorax.").
            if not self.terse and i + 1 < len(negated) and self.rng.random() < 0.3 and \
                    {negated[i], negated[i + 1]} <= {"Pneumothorax", "Pleural Effusion", "Consolidation",
                                                      "Edema"}:
                nouns = {"Pneumothorax": "pneumothorax", "Pleural Effusion": "pleural effusion",
                         "Consolidation": "focal consolidation", "Edema": "pulmonary edema"}
                self.add(section, f"no {nouns[negated[i]]} or {nouns[negated[i + 1]]}",
                         [(negated[i], LabelState.NEGATIVE), (negated[i + 1], LabelState.NEGATIVE)])
                i += 2
                continue
            self.add(section, self.w.negative(negated[i]), [(negated[i], LabelState.NEGATIVE)])
            i += 1

    def device_lines(self, section: Section) -> None:
        for d in self.devices:
            self.add(section, self.w.device(d), [("Support Devices", LabelState.POSITIVE)])

    def comparison(self, section: Section) -> None:
        if self.has_prior and self.rng.random() < 0.5:
            text = self.w.choice(["compared to prior study of ___, there is no significant interval change "
                                  "elsewhere", "comparison is made to the prior radiograph from ___"]) \
                if not self.terse else "vs prior ___"
            self.add(section, text, [])


def _write_structured(b: _ReportBuilder, present: list[Finding], normal_imp: str) -> str:
    """FINDINGS (comparison, devices, findings, negations, clear lungs), then IMPRESSION; returns FINDINGS."""
    b.comparison(Section.FINDINGS)
    b.device_lines(Section.FINDINGS)
    for f in present:
        b.describe(f, Section.FINDINGS)
    b.negations(Section.FINDINGS)
    if not any(f.observation in ("Lung Opacity", "Consolidation", "Edema", "Pneumonia") for f in present):
        b.add(Section.FINDINGS, b.w.choice(["the lungs are clear", "lungs are well expanded and clear"]), [])
    findings_text = " ".join(m.sentence for m in b.findings_m)
    for f in present:
        b.describe(f, Section.IMPRESSION)
    if not present:
        b.add(Section.IMPRESSION, normal_imp, [("No Finding", LabelState.POSITIVE)])
    elif any(f.state is LabelState.POSITIVE for f in present) and b.rng.random() < 0.15:
        b.add(Section.IMPRESSION, "findings were discussed with Dr. ___ by telephone at ___", [])
    return findings_text


def _write_impression_only(b: _ReportBuilder, style: ReportStyle, present: list[Finding],
                           normal_imp: str) -> None:
    """An IMPRESSION-only report (the impression-only and terse hospital styles)."""
    if style is ReportStyle.IMPRESSION_ONLY:
        b.comparison(Section.IMPRESSION)
    for f in present:
        b.describe(f, Section.IMPRESSION)
    b.negations(Section.IMPRESSION)
    b.device_lines(Section.IMPRESSION)
    if not present:
        b.add(Section.IMPRESSION, normal_imp, [("No Finding", LabelState.POSITIVE)])
    if b.terse:
        b.comparison(Section.IMPRESSION)


def write_report(findings: dict[str, Finding], devices: tuple[PlacedDevice, ...], style: ReportStyle,
                 has_prior: bool, rng: np.random.Generator) -> ReportText:
    """Write FINDINGS / IMPRESSION for ``findings`` and ``devices`` in ``style``; returns text and mentions."""
    w = _Writer(rng, style)
    terse = style is ReportStyle.HOSPITAL
    upper = terse and rng.random() < 0.5
    present = [f for f in findings.values() if f.present and f.observation in PATHOLOGIES]
    negated = [f.observation for f in findings.values() if f.state is LabelState.NEGATIVE]
    rng.shuffle(negated)
    b = _ReportBuilder(w, rng, terse, upper, negated, devices, has_prior)
    normal_imp = (w.choice(["NAD", "no acute process", "normal CXR"]) if terse else
                  w.choice(["no acute cardiopulmonary process", "no acute intrathoracic abnormality",
                            "normal chest radiograph"]))
    findings_text: str | None = None
    if style is ReportStyle.STRUCTURED:
        findings_text = _write_structured(b, present, normal_imp)
    else:
        _write_impression_only(b, style, present, normal_imp)
    impression_text = " ".join(m.sentence for m in b.impression_m)
    mentions = tuple(b.findings_m + b.impression_m)
    full = (f"FINDINGS: {findings_text}\n\nIMPRESSION: {impression_text}" if findings_text
            else f"IMPRESSION: {impression_text}")
    return ReportText(findings_text, impression_text, full, mentions)
