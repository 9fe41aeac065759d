"""The fact reader: on every sentence the realistic synthetic styles write, it reads back the written truth."""

from __future__ import annotations

from collections import Counter

import pytest

from cxr.data.synthetic.corpus import realistic_corpus
from cxr.reports.fact_parser import parse_report, parse_sentence
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
    fact_multiset_diff,
)


def test_parser_reads_back_the_truth_of_every_generated_sentence():
    studies = realistic_corpus(2500, seed=11)
    checked, wrong = Counter(), []
    for s in studies:
        for m in s.mentions:
            checked[s.style.value] += 1
            got = parse_sentence(m.sentence).facts
            if got != list(m.facts):
                wrong.append((m.sentence, m.facts, got))
    assert sum(checked.values()) > 10_000 and len(checked) >= 8
    assert not wrong, wrong[:5]


P, U, N = Presence.POSITIVE, Presence.UNCERTAIN, Presence.NEGATIVE


@pytest.mark.parametrize("sentence, facts", [
    ("No pneumothorax, pleural effusion, or focal airspace disease.",
     [Fact("Pneumothorax", N), Fact("Pleural Effusion", N), Fact("Lung Opacity", N)]),
    ("1. Stable moderate cardiomegaly.", [Fact("Cardiomegaly", P, Severity.MODERATE, trend=Trend.STABLE)]),
    ("Heart size and mediastinal contours are normal.",
     [Fact("Cardiomegaly", N), Fact("Enlarged Cardiomediastinum", N)]),
    ("ET tube terminates 4.5 cm above the carina.",
     [Fact("endotracheal tube", size_mm=45.0, position=DevicePosition.ABOVE_CARINA)]),
    ("Right IJ line tip projects over the mid SVC.",
     [Fact("central venous catheter", laterality=Side.RIGHT, position=DevicePosition.SVC)]),
    ("- Left basilar opacity, possibly pneumonia.",
     [Fact("Lung Opacity", P, laterality=Side.LEFT, location=Location.BASAL), Fact("Pneumonia", U)]),
    ("? SMALL R PTX.", [Fact("Pneumothorax", U, Severity.SMALL, Side.RIGHT)]),
    ("LUNGS: There is consolidation in the left lower lobe.",
     [Fact("Consolidation", laterality=Side.LEFT, location=Location.LOWER)]),
    ("Compared to ___, the small left pleural effusion has decreased.",
     [Fact("Pleural Effusion", P, Severity.SMALL, Side.LEFT, trend=Trend.BETTER)]),
    ("The heart may be mildly enlarged.", [Fact("Cardiomegaly", U, Severity.SMALL)]),
    ("A 1.2 cm nodule in the RUL.", [Fact("Lung Lesion", laterality=Side.RIGHT, location=Location.UPPER,
                                          size_mm=12.0)]),
    ("Bibasilar atelectasis is again seen.",
     [Fact("Atelectasis", laterality=Side.BILATERAL, location=Location.BASAL, trend=Trend.STABLE)]),
    ("No acute cardiopulmonary process.", [Fact(NO_FINDING)]),
    ("Retrocardiac opacity; pneumonia cannot be excluded.",
     [Fact("Lung Opacity", location=Location.RETROCARDIAC), Fact("Pneumonia", U)]),
    ("Small left effusion and no pneumothorax.",
     [Fact("Pleural Effusion", P, Severity.SMALL, Side.LEFT), Fact("Pneumothorax", N)]),
    ("Moderate cardiomegaly with no pleural effusion.",
     [Fact("Cardiomegaly", P, Severity.MODERATE), Fact("Pleural Effusion", N)]),
    ("Compared to ___, there is no significant interval change.", []),
    ("Portable AP view of the chest. The lungs are clear bilaterally.", []),
    ("The patient is 4 cm taller. CM.", [Fact("Cardiomegaly")]),  # 'cm' after a number is a unit
])
def test_hand_written_sentences(sentence, facts):
    assert parse_sentence(sentence).facts == facts


def test_spans_point_at_the_words():
    s = "2. There is a small left pleural effusion, unchanged."
    p = parse_sentence(s)
    assert p.content_start == 3
    (m,) = p.mentions
    assert s[slice(*m.subject)] == "pleural effusion"
    assert {a: s[slice(*sp)] for a, sp in m.attributes.items()} == {
        Attribute.SEVERITY: "small", Attribute.LATERALITY: "left", Attribute.TREND: "unchanged"}
    neg = parse_sentence("No pneumothorax or pleural effusion.")
    assert [x.cue_kind for x in neg.mentions] == ["neg_pre", "neg_pre"]


def test_diff_sees_a_two_fact_edit():
    """The classic bad negation flip changes two facts, and the comparison says so."""
    before = parse_sentence("No pneumothorax or pleural effusion.").facts
    after = parse_sentence("Pneumothorax or pleural effusion.").facts
    removed, added = fact_multiset_diff(before, after)
    assert len(removed) == len(added) == 2
    good = parse_sentence("No pneumothorax. Pleural effusion is present.").facts
    removed, added = fact_multiset_diff(before, good)
    assert len(removed) == len(added) == 1 and removed[0].differing(added[0]) == [Attribute.PRESENCE]
    # a denied finding's size is not a claim: "no large effusion" vs "no small effusion" asserts the same
    a, b = parse_sentence("No large effusion.").facts[0], parse_sentence("No small effusion.").facts[0]
    assert a != b and a.differing(b) == []


def test_parse_report_walks_sections():
    facts = [f for p in parse_report("[FINDINGS] Small left effusion. [IMPRESSION] No pneumothorax.") for f in
             p.facts]
    assert [f.subject for f in facts] == ["Pleural Effusion", "Pneumothorax"]
