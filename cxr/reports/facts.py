"""Clinical facts of a chest X-ray report: what each sentence asserts, as structured values.

A :class:`Fact` is one asserted finding or device: its subject (a CheXpert observation such as
``"Pleural Effusion"``, ``"No Finding"`` for a normal-study statement, or a device from :data:`DEVICES`), whether it
is present, uncertain or absent, and the attributes the sentence states (severity grade, side, lung location,
measured size, device position, temporal trend). Attributes a sentence does not state are ``None``.

The synthetic world writes every sentence together with its facts (:mod:`cxr.data.synthetic.realistic`);
:mod:`cxr.reports.fact_parser` reads the same facts back from text with a lexicon. Error injection
(:mod:`cxr.reports.errors`) says which fact and attribute it changed, so a test can re-read the corrupted text and
check that exactly that one attribute differs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import Enum


class Presence(str, Enum):
    """Whether a sentence asserts, hedges or denies its subject."""

    POSITIVE = "positive"
    UNCERTAIN = "uncertain"
    NEGATIVE = "negative"


class Severity(str, Enum):
    """Severity / size grade ("tiny", "trace", "mild", "small" are all SMALL; "severe", "marked" LARGE)."""

    SMALL = "small"
    MODERATE = "moderate"
    LARGE = "large"


class Side(str, Enum):
    """Laterality in the patient's frame."""

    RIGHT = "right"
    LEFT = "left"
    BILATERAL = "bilateral"


class Location(str, Enum):
    """Where in the chest a finding is (beyond its side)."""

    UPPER = "upper"  # upper lobe / upper lung zone
    MID = "mid"  # right middle lobe, lingula, mid lung
    LOWER = "lower"  # lower lobe / lower lung zone
    APICAL = "apical"
    BASAL = "basal"  # base, basilar, bibasilar
    RETROCARDIAC = "retrocardiac"
    PERIHILAR = "perihilar"


class Trend(str, Enum):
    """Change since a prior study, as worded ("stable", "increased", "improved", "new")."""

    STABLE = "stable"
    WORSE = "worse"
    BETTER = "better"
    NEW = "new"


class DevicePosition(str, Enum):
    """Where a device's tip is, as worded."""

    STANDARD = "standard"  # "in standard/appropriate/good position", "in place", "well positioned"
    MALPOSITIONED = "malpositioned"
    ABOVE_CARINA = "above the carina"
    BELOW_CARINA = "below the carina"
    RIGHT_MAINSTEM = "right mainstem bronchus"
    STOMACH = "stomach"
    ESOPHAGUS = "esophagus"
    DUODENUM = "duodenum"
    SVC = "SVC"
    CAVOATRIAL = "cavoatrial junction"
    RIGHT_ATRIUM = "right atrium"
    RIGHT_VENTRICLE = "right ventricle"


class Attribute(str, Enum):
    """The attributes of a :class:`Fact` (the field names), as named in an injected error's report."""

    SUBJECT = "subject"
    PRESENCE = "presence"
    SEVERITY = "severity"
    LATERALITY = "laterality"
    LOCATION = "location"
    SIZE = "size_mm"
    POSITION = "position"
    TREND = "trend"


#: Subject of a normal-study statement ("No acute cardiopulmonary process.").
NO_FINDING = "No Finding"
#: Device subjects. A device fact's subject is one of these; every device makes "Support Devices" positive.
DEVICES: tuple[str, ...] = ("endotracheal tube", "tracheostomy tube", "nasogastric tube", "central venous catheter",
                            "PICC", "pacemaker", "chest tube")


@dataclass(frozen=True)
class Fact:
    """One asserted finding or device and the attributes its sentence states (None: not stated).

    ``size_mm`` is a measurement in millimetres: a lesion's size, or for a device its distance to the landmark
    ("4 cm above the carina" → position ABOVE_CARINA, size_mm 40.0).
    """

    subject: str
    presence: Presence = Presence.POSITIVE
    severity: Severity | None = None
    laterality: Side | None = None
    location: Location | None = None
    size_mm: float | None = None
    position: DevicePosition | None = None
    trend: Trend | None = None

    @property
    def is_device(self) -> bool:
        return self.subject in DEVICES

    def asserted(self) -> Fact:
        """The fact as a claim: a denied finding asserts no severity, size or trend ("no large effusion" denies
        an effusion; its "large" is not a statement about the patient), so those are dropped for NEGATIVE."""
        if self.presence is Presence.NEGATIVE:
            return replace(self, severity=None, size_mm=None, trend=None)
        return self

    def differing(self, other: Fact) -> list[Attribute]:
        """Attributes whose values differ between the two asserted facts.

        When either fact is a denial, only what a denial asserts is compared (subject, presence, side, location,
        position): "No left pleural effusion." contradicts "Large left pleural effusion, stable." in presence
        alone — the size and trend belonged to the effusion that is now denied.
        """
        a, b = self.asserted(), other.asserted()
        if Presence.NEGATIVE in (a.presence, b.presence):
            a, b = replace(a, severity=None, size_mm=None, trend=None), replace(b, severity=None, size_mm=None,
                                                                                trend=None)
        return [Attribute(f.name) for f in fields(Fact) if getattr(a, f.name) != getattr(b, f.name)]

    def to_json(self) -> dict:
        """A JSON-ready dict with only the stated attributes (enum values as strings)."""
        out = {}
        for f in fields(Fact):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = v.value if isinstance(v, Enum) else v
        return out

    @classmethod
    def from_json(cls, raw: dict) -> Fact:
        """Inverse of :meth:`to_json`."""
        conv = {"presence": Presence, "severity": Severity, "laterality": Side, "location": Location,
                "position": DevicePosition, "trend": Trend, "size_mm": float, "subject": str}
        unknown = set(raw) - set(conv)
        if unknown:
            raise ValueError(f"unknown fact field(s) {sorted(unknown)}")
        return cls(**{k: conv[k](v) for k, v in raw.items()})


def fact_multiset_diff(before: list[Fact], after: list[Fact]) -> tuple[list[Fact], list[Fact]]:
    """(removed, added): asserted facts of ``before`` missing from ``after`` and vice versa (multiset)."""
    rest = [f.asserted() for f in after]
    removed = []
    for f in (x.asserted() for x in before):
        if f in rest:
            rest.remove(f)
        else:
            removed.append(f)
    return removed, rest
