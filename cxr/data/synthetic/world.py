"""Seeded sampling of the synthetic world: patients, studies, views, findings, devices, reports and labels.

Pure functions of a numpy ``Generator``: the same seed gives the same world. Findings are sampled from a few
latent conditions so that they co-occur as in real chest X-ray cohorts (heart failure -> cardiomegaly, edema,
effusions; infection -> pneumonia, consolidation, opacity; portable AP studies -> devices). The report is then
written from the findings (:mod:`cxr.data.synthetic.reports`) and the 14 labels are derived from what the
report says, so text and labels always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import partial

import numpy as np

from cxr.data.synthetic.findings import (
    Device,
    Finding,
    Laterality,
    Mention,
    PlacedDevice,
    ReportStyle,
    Severity,
    Zone,
)
from cxr.data.synthetic.realistic import REALISTIC_STYLES, write_realistic_report
from cxr.data.synthetic.reports import ReportText, labels_from_mentions, write_report
from cxr.labels import LabelState
from cxr.records import Split, ViewPosition


class ReportStyleMix(str, Enum):
    """Which report styles a world is written in.

    ``legacy``: the original three styles (structured, impression-only, terse hospital; the default, so existing
    worlds and the demo stay byte-identical). ``realistic``: the nine styles of
    :data:`~cxr.data.synthetic.realistic.REALISTIC_STYLES` (numbered/bulleted impressions, ``XXXX`` and ``___``,
    comparison lines, stable/unchanged findings, negation lists, measurements, organ headers, findings-only),
    every sentence with its facts.
    """

    LEGACY = "legacy"
    REALISTIC = "realistic"


@dataclass(frozen=True)
class SplitFractions:
    """Patient-level split fractions; they must sum to 1."""

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2

    def __post_init__(self) -> None:
        values = (self.train, self.val, self.test)
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {values}")


@dataclass(frozen=True)
class SyntheticView:
    """One image of a study. ``image_id`` is a MIMIC-style dicom_id (5 dash-separated groups of 8 hex)."""

    image_id: str
    view: ViewPosition
    index: int  # position within the study (0-based)


@dataclass(frozen=True)
class PatientAnatomy:
    """Per-patient body habitus, used by the phantom so one patient's images look alike."""

    body_scale: float  # overall size of the thorax in the field of view
    shift_x: float  # horizontal offset of the thorax (fraction of the width)
    shift_y: float
    lung_height: float  # relative lung height (inspiration)
    heart_width: float  # baseline cardiothoracic ratio
    exposure: float  # film exposure (brightness offset)


@dataclass
class SyntheticStudy:
    """One synthetic study with its ground truth.

    ``findings`` maps an observation name to its :class:`Finding` (mentioned observations only);
    ``labels`` is int8[14] in ``CHEXPERT_OBSERVATIONS`` order (LabelState values). ``study_id``/``patient_id``
    are MIMIC-style 8-digit ids ('5…' / '1…'); layouts map them to their own id formats.
    """

    study_id: str
    patient_id: str
    patient_index: int
    study_order: int  # chronological order of the study within its patient (0 = first)
    split: Split
    views: tuple[SyntheticView, ...]
    labels: np.ndarray
    findings: dict[str, Finding]
    devices: tuple[PlacedDevice, ...]
    findings_text: str | None
    impression_text: str | None  # None only for findings-only reports (realistic styles)
    report_text: str
    style: ReportStyle
    portable: bool
    anatomy: PatientAnatomy
    render_seed: int
    mentions: tuple[Mention, ...] = field(default=(), repr=False)

    @property
    def frontal_view(self) -> ViewPosition:
        """The frontal projection used for this study (AP when portable)."""
        return ViewPosition.AP if self.portable else ViewPosition.PA


def _pick(rng: np.random.Generator, options: tuple, probs: tuple[float, ...]):
    return options[int(rng.choice(len(options), p=np.asarray(probs) / np.sum(probs)))]


def _side(rng: np.random.Generator, bilateral: float = 0.15) -> Laterality:
    return _pick(rng, (Laterality.RIGHT, Laterality.LEFT, Laterality.BILATERAL),
                 ((1 - bilateral) * 0.55, (1 - bilateral) * 0.45, bilateral))


def _single_side(rng: np.random.Generator) -> Laterality:
    return Laterality.RIGHT if rng.random() < 0.55 else Laterality.LEFT


def _severity(rng: np.random.Generator, probs: tuple[float, float, float] = (0.5, 0.35, 0.15)) -> Severity:
    return _pick(rng, (Severity.SMALL, Severity.MODERATE, Severity.LARGE), probs)


def _zone(rng: np.random.Generator) -> Zone:
    return _pick(rng, (Zone.LOWER, Zone.MID, Zone.UPPER), (0.65, 0.15, 0.2))


def _dicom_id(rng: np.random.Generator) -> str:
    raw = rng.integers(0, 16, size=40)
    hexes = "".join("0123456789abcdef"[int(v)] for v in raw)
    return "-".join(hexes[i:i + 8] for i in range(0, 40, 8))


# Probability that a present finding is reported with hedged wording (-> UNCERTAIN).
_HEDGE = {
    "Pneumonia": 0.45, "Consolidation": 0.15, "Atelectasis": 0.15, "Edema": 0.15, "Lung Lesion": 0.2,
    "Fracture": 0.2, "Pneumothorax": 0.08, "Pleural Effusion": 0.08, "Cardiomegaly": 0.08,
    "Enlarged Cardiomediastinum": 0.2, "Lung Opacity": 0.1, "Pleural Other": 0.2,
}
# Probability that an absent finding is explicitly negated in a full-sentence report.
_NEGATE = {
    "Pneumothorax": 0.55, "Pleural Effusion": 0.5, "Consolidation": 0.3, "Pneumonia": 0.2, "Edema": 0.25,
    "Cardiomegaly": 0.15, "Enlarged Cardiomediastinum": 0.1, "Fracture": 0.05, "Lung Lesion": 0.03,
    "Lung Opacity": 0.05, "Atelectasis": 0.03, "Pleural Other": 0.01,
}


def sample_views(rng: np.random.Generator, portable: bool) -> tuple[ViewPosition, ...]:
    """1-3 views: PA(+lateral) for upright studies, AP for portable ones, a few lateral-only studies."""
    if rng.random() < 0.03:
        return (ViewPosition.LATERAL,)
    if portable:
        return _pick(rng, ((ViewPosition.AP,), (ViewPosition.AP, ViewPosition.AP),
                           (ViewPosition.AP, ViewPosition.LATERAL)), (0.85, 0.08, 0.07))
    return _pick(rng, ((ViewPosition.PA, ViewPosition.LATERAL), (ViewPosition.PA,),
                       (ViewPosition.PA, ViewPosition.LATERAL, ViewPosition.LATERAL)), (0.75, 0.2, 0.05))


def _sample_devices(rng: np.random.Generator, portable: bool) -> list[PlacedDevice]:
    """Tubes, lines and pacemakers (ICU-heavy for portable studies); chest tubes come with a pneumothorax."""
    devices: list[PlacedDevice] = []
    if portable:
        ett = rng.random() < 0.3
        if ett:
            devices.append(PlacedDevice(Device.ETT))
        if rng.random() < (0.7 if ett else 0.1):
            devices.append(PlacedDevice(Device.NG_TUBE))
        if rng.random() < 0.35:
            devices.append(PlacedDevice(Device.CENTRAL_LINE, _single_side(rng)))
    elif rng.random() < 0.04:
        devices.append(PlacedDevice(Device.CENTRAL_LINE, _single_side(rng)))
    if rng.random() < (0.06 if portable else 0.04):
        devices.append(PlacedDevice(Device.PACEMAKER))
    return devices


def _add_finding(rng: np.random.Generator, present: dict[str, Finding], name: str,
                 laterality: Laterality | None = None, severity: Severity | None = None,
                 zone: Zone | None = None, hedge: float | None = None) -> None:
    """Record a present finding, hedged (uncertain) with the finding's usual probability."""
    p_hedge = _HEDGE.get(name, 0.1) if hedge is None else hedge
    state = LabelState.UNCERTAIN if rng.random() < p_hedge else LabelState.POSITIVE
    present[name] = Finding(name, state, laterality, severity, zone)


def _sample_parenchyma(rng: np.random.Generator, present: dict[str, Finding], infection: bool) -> None:
    """Pneumonia/consolidation/opacity (infection, or opacity with edema), atelectasis, lesion, fracture."""
    add = partial(_add_finding, rng, present)
    if infection:
        side, zone = _side(rng, 0.15), _zone(rng)
        if rng.random() < 0.75:
            add("Pneumonia", side, _severity(rng), zone)
        if rng.random() < 0.6:
            add("Consolidation", side, _severity(rng), zone)
        if rng.random() < 0.6 or not present.keys() & {"Pneumonia", "Consolidation"}:
            add("Lung Opacity", side, _severity(rng), zone)
    elif rng.random() < 0.05 + 0.15 * ("Edema" in present):
        add("Lung Opacity", _side(rng, 0.3), _severity(rng), _zone(rng))
    if rng.random() < 0.1 + 0.3 * ("Pleural Effusion" in present):
        effusion = present.get("Pleural Effusion")
        side = (effusion.laterality if effusion is not None and effusion.laterality is not Laterality.BILATERAL
                else _side(rng, 0.2))
        add("Atelectasis", side, _severity(rng, (0.6, 0.3, 0.1)), Zone.LOWER)
    if rng.random() < 0.035:
        add("Lung Lesion", _single_side(rng), _severity(rng, (0.6, 0.3, 0.1)), _zone(rng))
    if rng.random() < 0.025:
        add("Fracture", _single_side(rng), _severity(rng, (0.6, 0.3, 0.1)))
    if rng.random() < 0.02:
        add("Pleural Other", _single_side(rng), _severity(rng, (0.6, 0.3, 0.1)))


def _sample_present(rng: np.random.Generator, portable: bool, chf: bool, infection: bool,
                    devices: list[PlacedDevice]) -> dict[str, Finding]:
    """The present (positive or hedged) findings, correlated through heart failure and infection; a chest tube
    is appended to ``devices`` when one is placed."""
    present: dict[str, Finding] = {}
    add = partial(_add_finding, rng, present)
    chest_tube = portable and rng.random() < 0.06
    if rng.random() < 0.02 + (0.3 if chest_tube else 0.0):
        add("Pneumothorax", _single_side(rng), _severity(rng, (0.6, 0.3, 0.1)))
    if chest_tube:
        side = present["Pneumothorax"].laterality if "Pneumothorax" in present else _single_side(rng)
        devices.append(PlacedDevice(Device.CHEST_TUBE, side))

    if rng.random() < 0.07 + 0.5 * chf + 0.15 * infection:
        add("Pleural Effusion", _side(rng, 0.6 if chf else 0.15), _severity(rng))
    has_pacer = any(d.device is Device.PACEMAKER for d in devices)
    if rng.random() < 0.08 + 0.6 * chf + 0.3 * has_pacer:
        add("Cardiomegaly", severity=_severity(rng, (0.5, 0.35, 0.15)))
    if rng.random() < 0.03 + 0.6 * chf:
        add("Edema", Laterality.BILATERAL, _severity(rng, (0.5, 0.35, 0.15)))
    if rng.random() < 0.02 + 0.25 * ("Cardiomegaly" in present):
        add("Enlarged Cardiomediastinum", severity=_severity(rng))
    _sample_parenchyma(rng, present, infection)

    # Opacity or atelectasis without infection: radiologists often hedge pneumonia.
    if "Pneumonia" not in present and present.keys() & {"Lung Opacity", "Atelectasis"} and rng.random() < 0.3:
        src = present.get("Lung Opacity") or present["Atelectasis"]
        present["Pneumonia"] = Finding("Pneumonia", LabelState.UNCERTAIN, src.laterality, Severity.SMALL,
                                       src.zone)
    return present


def sample_conditions(rng: np.random.Generator, portable: bool,
                      style: ReportStyle) -> tuple[dict[str, Finding], tuple[PlacedDevice, ...]]:
    """Sample the mentioned findings and the devices of one study (before any text is written).

    The draws happen in a fixed order (heart failure, infection, devices, findings, negations): the same seed
    gives the same world, byte for byte.
    """
    chf = rng.random() < (0.22 if portable else 0.08)
    infection = rng.random() < (0.14 if portable else 0.08)
    devices = _sample_devices(rng, portable)
    findings = dict(_sample_present(rng, portable, chf, infection, devices))
    negate_scale = 0.25 if style is ReportStyle.HOSPITAL else 1.0
    for name, p in _NEGATE.items():
        if name not in findings and rng.random() < p * negate_scale:
            findings[name] = Finding(name, LabelState.NEGATIVE)
    return findings, tuple(devices)


def _anatomy(rng: np.random.Generator) -> PatientAnatomy:
    return PatientAnatomy(
        body_scale=float(rng.uniform(0.88, 1.08)), shift_x=float(rng.uniform(-0.04, 0.04)),
        shift_y=float(rng.uniform(-0.04, 0.04)), lung_height=float(rng.uniform(0.9, 1.1)),
        heart_width=float(rng.uniform(0.40, 0.47)), exposure=float(rng.uniform(-0.06, 0.06)))


def _assign_splits(rng: np.random.Generator, num_patients: int, fractions: SplitFractions) -> list[Split]:
    """Deterministic patient-level split with counts proportional to ``fractions``.

    Every split with a non-zero fraction gets at least one patient when there are enough patients.
    """
    splits = (Split.TRAIN, Split.VAL, Split.TEST)
    fr = np.array([fractions.train, fractions.val, fractions.test])
    counts = np.floor(fr * num_patients).astype(int)
    for i in np.argsort(-(fr * num_patients - counts))[: num_patients - counts.sum()]:
        counts[i] += 1
    nonzero = [i for i in range(3) if fr[i] > 0]
    if num_patients >= len(nonzero):
        for i in nonzero:
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] += 1
    labels = [s for s, c in zip(splits, counts, strict=False) for _ in range(int(c))]
    order = rng.permutation(num_patients)
    return [labels[int(k)] for k in order]


def _style(rng: np.random.Generator, hospital_fraction: float) -> ReportStyle:
    u = rng.random()
    if u < hospital_fraction:
        return ReportStyle.HOSPITAL
    if u < hospital_fraction + 0.1:
        return ReportStyle.IMPRESSION_ONLY
    return ReportStyle.STRUCTURED


def _realistic_style(rng: np.random.Generator) -> ReportStyle:
    styles = tuple(REALISTIC_STYLES)
    return _pick(rng, styles, tuple(REALISTIC_STYLES[s] for s in styles))


def sample_study(rng: np.random.Generator, *, study_id: str, patient_id: str, patient_index: int,
                 study_order: int, split: Split, anatomy: PatientAnatomy,
                 hospital_fraction: float = 0.15,
                 report_styles: ReportStyleMix = ReportStyleMix.LEGACY) -> SyntheticStudy:
    """Sample one study: projection, views, findings, devices, report and labels.

    ``hospital_fraction`` applies to the legacy mix only (the realistic mix has fixed style weights).
    """
    portable = bool(rng.random() < 0.35)
    realistic = ReportStyleMix(report_styles) is ReportStyleMix.REALISTIC
    style = _realistic_style(rng) if realistic else _style(rng, hospital_fraction)
    views = sample_views(rng, portable)
    findings, devices = sample_conditions(rng, portable, style)
    writer = write_realistic_report if realistic else write_report
    report: ReportText = writer(findings, devices, style, has_prior=study_order > 0, rng=rng)
    labels = labels_from_mentions(report.mentions)
    return SyntheticStudy(
        study_id=study_id, patient_id=patient_id, patient_index=patient_index, study_order=study_order,
        split=split,
        views=tuple(SyntheticView(_dicom_id(rng), v, i) for i, v in enumerate(views)),
        labels=labels, findings=findings, devices=devices, findings_text=report.findings,
        impression_text=report.impression, report_text=report.full_text, style=style, portable=portable,
        anatomy=anatomy, render_seed=int(rng.integers(0, 2**31 - 1)), mentions=report.mentions)


def sample_world(num_studies: int, seed: int = 0, split_fractions: SplitFractions | None = None,
                 hospital_fraction: float = 0.15,
                 report_styles: ReportStyleMix | str = ReportStyleMix.LEGACY) -> list[SyntheticStudy]:
    """Sample ``num_studies`` studies from patients with 1-6 studies each, split by patient.

    ``report_styles`` picks the legacy three styles (default) or the realistic nine (:class:`ReportStyleMix`).
    """
    if num_studies < 1:
        raise ValueError(f"num_studies must be >= 1, got {num_studies}")
    fractions = split_fractions or SplitFractions()
    rng = np.random.default_rng(seed)
    per_patient: list[int] = []
    while sum(per_patient) < num_studies:
        per_patient.append(int(min(6, 1 + rng.poisson(1.4))))
    per_patient[-1] -= sum(per_patient) - num_studies
    num_patients = len(per_patient)
    patient_ids = rng.choice(9_000_000, size=num_patients, replace=False) + 10_000_000
    study_ids = rng.choice(10_000_000, size=num_studies, replace=False) + 50_000_000
    splits = _assign_splits(rng, num_patients, fractions)
    studies: list[SyntheticStudy] = []
    for p, n in enumerate(per_patient):
        anatomy = _anatomy(rng)
        for k in range(n):
            studies.append(sample_study(
                rng, study_id=str(int(study_ids[len(studies)])), patient_id=str(int(patient_ids[p])),
                patient_index=p, study_order=k, split=splits[p], anatomy=anatomy,
                hospital_fraction=hospital_fraction, report_styles=ReportStyleMix(report_styles)))
    return studies
