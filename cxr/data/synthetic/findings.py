"""Vocabulary of the synthetic world: what a finding is (observation, state, side, size, zone) and devices.

A :class:`Finding` is one *mention* in the report: the observation, the label state the wording implies
(positive / negative / uncertain) and, for positive or hedged findings, where and how large it is. Observations
that the report does not mention have no ``Finding`` at all (their label is NOT_MENTIONED).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cxr.labels import LabelState
from cxr.reports.facts import Fact


class Laterality(str, Enum):
    """Side in the PATIENT's frame (radiological convention puts the patient's right on the image left)."""

    RIGHT = "right"
    LEFT = "left"
    BILATERAL = "bilateral"

    @property
    def sides(self) -> tuple[Laterality, ...]:
        """The single sides this laterality covers (BILATERAL -> RIGHT and LEFT)."""
        if self is Laterality.BILATERAL:
            return (Laterality.RIGHT, Laterality.LEFT)
        return (self,)


class Severity(str, Enum):
    """Size / degree of a finding."""

    SMALL = "small"
    MODERATE = "moderate"
    LARGE = "large"

    @property
    def scale(self) -> float:
        """A 0-1 magnitude used by the phantom renderer."""
        return {Severity.SMALL: 0.35, Severity.MODERATE: 0.65, Severity.LARGE: 1.0}[self]


class Zone(str, Enum):
    """Vertical lung zone of a focal finding (lower lobe, mid zone = RML / lingula, upper lobe)."""

    LOWER = "lower"
    MID = "mid"
    UPPER = "upper"


class Device(str, Enum):
    """Support devices; any of them makes 'Support Devices' positive."""

    ETT = "endotracheal tube"
    NG_TUBE = "nasogastric tube"
    CENTRAL_LINE = "central venous line"
    PACEMAKER = "pacemaker"
    CHEST_TUBE = "chest tube"


class ReportStyle(str, Enum):
    """How the report is written."""

    STRUCTURED = "structured"  # FINDINGS + IMPRESSION, full sentences (MIMIC-like)
    IMPRESSION_ONLY = "impression_only"  # IMPRESSION only, full sentences
    HOSPITAL = "hospital"  # IMPRESSION only, terse and abbreviation-heavy ("B/L PLEFF, small. No PTX.")
    # Realistic styles (cxr.data.synthetic.realistic; used when a world is sampled with realistic reports):
    MIMIC = "mimic"  # FINDINGS + IMPRESSION, "___", comparison lines, measurements, some numbered impressions
    OPENI = "openi"  # IU/Open-I: "XXXX" de-identification, "No A, B, or C." lists, "No active disease."
    NUMBERED = "numbered"  # impression as a numbered list ("1. ... 2. ..." or "1) ... 2) ...", some without periods)
    BULLETED = "bulleted"  # impression as a dash/asterisk list
    TEMPLATED = "templated"  # findings under ALL-CAPS organ headers ("LUNGS: Clear. PLEURA: ...")
    FINDINGS_ONLY = "findings_only"  # FINDINGS only, no impression
    FOLLOWUP = "followup"  # comparison-led, abnormal findings worded stable/unchanged/again seen/redemonstrated


class Section(str, Enum):
    """Report section a sentence belongs to."""

    FINDINGS = "findings"
    IMPRESSION = "impression"


#: Observations that carry a side (the phantom draws them on that side; the report names the side).
LATERALISED: frozenset[str] = frozenset({
    "Pleural Effusion", "Pneumothorax", "Consolidation", "Atelectasis", "Lung Lesion", "Pneumonia",
    "Lung Opacity", "Fracture", "Pleural Other",
})


@dataclass(frozen=True)
class Finding:
    """One mentioned observation.

    ``state`` is the label the wording implies. ``laterality``/``severity``/``zone`` describe positive and
    uncertain findings (None where the observation has no side / size / zone, and for negated mentions).
    """

    observation: str
    state: LabelState
    laterality: Laterality | None = None
    severity: Severity | None = None
    zone: Zone | None = None

    @property
    def present(self) -> bool:
        """Whether the finding is (possibly) there and therefore drawn by the phantom."""
        return self.state in (LabelState.POSITIVE, LabelState.UNCERTAIN)


@dataclass(frozen=True)
class PlacedDevice:
    """A device and, for chest tubes and central lines, its side (patient frame)."""

    device: Device
    side: Laterality | None = None


@dataclass(frozen=True)
class Mention:
    """One sentence of the generated report, the label states it asserts and (realistic styles) its facts.

    ``facts`` lists what the sentence states, attribute by attribute (see :mod:`cxr.reports.facts`); it is empty
    for the original three styles, whose sentences carry label states only.
    """

    section: Section
    sentence: str
    states: tuple[tuple[str, LabelState], ...]
    facts: tuple[Fact, ...] = ()
