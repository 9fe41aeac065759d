"""Synthetic world sampling: determinism, patient-level splits, report/label consistency, prevalence."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.data.synthetic.findings import LATERALISED, ReportStyle
from cxr.data.synthetic.reports import (
    HEDGE_CUES,
    LATERALITY_TERMS,
    NEGATION_CUES,
    PATHOLOGIES,
    labels_from_mentions,
)
from cxr.data.synthetic.world import SplitFractions, sample_world
from cxr.labels import OBSERVATION_INDEX, LabelState
from cxr.records import Split, ViewPosition


@pytest.fixture(scope="module")
def big_world():
    return sample_world(2000, seed=123)


def test_same_seed_same_world_different_seed_differs():
    a, b, c = sample_world(60, seed=5), sample_world(60, seed=5), sample_world(60, seed=6)
    assert [s.report_text for s in a] == [s.report_text for s in b]
    assert all(np.array_equal(x.labels, y.labels) for x, y in zip(a, b, strict=False))
    assert [s.study_id for s in a] == [s.study_id for s in b]
    assert [s.report_text for s in a] != [s.report_text for s in c]


def test_ids_and_views():
    world = sample_world(300, seed=1)
    assert len(world) == 300
    assert len({s.study_id for s in world}) == 300
    for s in world:
        assert len(s.study_id) == 8 and s.study_id.startswith("5")
        assert len(s.patient_id) == 8 and s.patient_id.startswith("1")
        assert 1 <= len(s.views) <= 3
        for v in s.views:
            groups = v.image_id.split("-")
            assert [len(g) for g in groups] == [8] * 5 and all(int(g, 16) >= 0 for g in groups)
    lateral_only = [s for s in world if all(v.view.is_lateral for v in s.views)]
    assert 0 < len(lateral_only) < 0.1 * len(world)
    assert any(ViewPosition.AP in [v.view for v in s.views] for s in world)


def test_splits_are_patient_level_and_follow_fractions(big_world):
    split_of: dict[str, Split] = {}
    for s in big_world:
        assert split_of.setdefault(s.patient_id, s.split) is s.split, "patient in two splits"
    patients = np.array([sp.value for sp in split_of.values()])
    assert abs(np.mean(patients == "train") - 0.7) < 0.02
    assert abs(np.mean(patients == "val") - 0.1) < 0.02
    small = sample_world(40, seed=0)
    assert {s.split for s in small} == {Split.TRAIN, Split.VAL, Split.TEST}
    custom = sample_world(200, seed=0, split_fractions=SplitFractions(0.5, 0.0, 0.5))
    assert Split.VAL not in {s.split for s in custom}
    with pytest.raises(ValueError):
        SplitFractions(0.5, 0.5, 0.5)


def test_labels_follow_report_wording(big_world):
    for s in big_world[:600]:
        assert np.array_equal(s.labels, labels_from_mentions(s.mentions))
        text = s.report_text
        for m in s.mentions:
            assert m.sentence in text
            low = m.sentence.lower()
            for name, state in m.states:
                if state is LabelState.NEGATIVE:
                    assert any(c in low for c in NEGATION_CUES), m.sentence
                elif state is LabelState.UNCERTAIN:
                    assert any(c in low for c in HEDGE_CUES), m.sentence
                elif name != "No Finding":
                    assert not any(c in low for c in HEDGE_CUES), m.sentence
                    assert not low.startswith("no "), m.sentence
        present = [n for n in PATHOLOGIES if s.labels[OBSERVATION_INDEX[n]] in (1, -1)]
        no_finding = s.labels[OBSERVATION_INDEX["No Finding"]]
        assert (no_finding == 1) == (not present)
        assert no_finding in (1, LabelState.NOT_MENTIONED)
        assert (s.labels[OBSERVATION_INDEX["Support Devices"]] == 1) == bool(s.devices)
        for name, f in s.findings.items():
            assert s.labels[OBSERVATION_INDEX[name]] == f.state


def test_report_states_laterality_of_present_findings(big_world):
    checked = 0
    for s in big_world[:800]:
        for name, f in s.findings.items():
            if not f.present or name not in LATERALISED:
                continue
            terms = LATERALITY_TERMS[f.laterality]
            sentences = [m.sentence.lower() for m in s.mentions if (name, f.state) in m.states]
            assert sentences
            for sent in sentences:
                words = set(sent.replace(",", " ").replace(".", " ").split())
                assert any(t in words or f" {t} " in f" {sent} " for t in terms), (f.laterality, sent)
            checked += 1
    assert checked > 100


def test_styles_and_text_features(big_world):
    styles = np.array([s.style.value for s in big_world])
    assert abs(np.mean(styles == ReportStyle.HOSPITAL.value) - 0.15) < 0.03
    hospital = [s for s in big_world if s.style is ReportStyle.HOSPITAL]
    assert all(s.findings_text is None for s in hospital)
    structured = [s for s in big_world if s.style is ReportStyle.STRUCTURED]
    assert all(s.findings_text for s in structured)
    joined = " ".join(s.report_text for s in big_world)
    for token in ("___", "Compared to prior study of ___", "PTX", "ETT", "cannot exclude", "B/L"):
        assert token.lower() in joined.lower(), token


# Designed prevalence (positive or uncertain) per observation, generous bounds for 2000 studies.
DESIGNED = {
    "Pleural Effusion": (0.11, 0.22), "Cardiomegaly": (0.12, 0.23), "Edema": (0.07, 0.15),
    "Atelectasis": (0.10, 0.20), "Lung Opacity": (0.09, 0.18), "Pneumonia": (0.08, 0.18),
    "Consolidation": (0.04, 0.10), "Pneumothorax": (0.01, 0.05), "Support Devices": (0.2, 0.36),
    "No Finding": (0.38, 0.58), "Lung Lesion": (0.015, 0.06), "Fracture": (0.008, 0.04),
    "Enlarged Cardiomediastinum": (0.04, 0.1), "Pleural Other": (0.005, 0.04),
}


def test_prevalence_and_cooccurrence(big_world):
    labels = np.stack([s.labels for s in big_world])
    present = (labels == 1) | (labels == -1)
    for name, (lo, hi) in DESIGNED.items():
        rate = present[:, OBSERVATION_INDEX[name]].mean()
        assert lo <= rate <= hi, (name, rate)

    def col(name):
        return present[:, OBSERVATION_INDEX[name]]

    cm, ed, ef = col("Cardiomegaly"), col("Edema"), col("Pleural Effusion")
    assert ed[cm].mean() > 2 * ed[~cm].mean()
    assert ef[ed].mean() > 2 * ef[~ed].mean()
    pna, cons = col("Pneumonia"), col("Consolidation")
    assert cons[pna].mean() > 3 * cons[~pna].mean()
    portable = np.array([s.portable for s in big_world])
    sd = col("Support Devices")
    assert sd[portable].mean() > 3 * sd[~portable].mean()
