"""Error injection changes exactly one clinical fact: property-tested against the synthetic world's truth."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from cxr.data.synthetic.corpus import corpus_records, realistic_corpus
from cxr.data.synthetic.realistic import article
from cxr.reports.compose import compose_report_text
from cxr.reports.errors import (
    ERROR_FUNCTIONS,
    PREFERRED_KINDS,
    ErrorKind,
    add_medical_device,
    add_opposite_sentence,
    applicable_errors,
    change_device_name,
    change_device_position,
    change_location,
    change_measurement,
    change_severity,
    false_negation,
    false_prediction,
    inject_error,
)
from cxr.reports.fact_parser import PREFIX, parse_sentence
from cxr.reports.facts import Attribute, Presence, fact_multiset_diff
from cxr.reports.sentences import parse_sections, split_sentences

#: Which attributes each category may change (an added sentence adds one fact instead).
CHANGES = {ErrorKind.SEVERITY_CHANGE: {Attribute.SEVERITY, Attribute.TREND},
           ErrorKind.LOCATION_CHANGE: {Attribute.LATERALITY, Attribute.LOCATION},
           ErrorKind.FALSE_PREDICTION: {Attribute.PRESENCE}, ErrorKind.FALSE_NEGATION: {Attribute.PRESENCE},
           ErrorKind.MEASUREMENT_CHANGE: {Attribute.SIZE}, ErrorKind.DEVICE_CHANGE: {Attribute.SUBJECT},
           ErrorKind.DEVICE_POSITION: {Attribute.POSITION}}


def _check(text: str, truth: dict[str, list], error) -> list[str]:
    """Problems with one injected error, judged against the generator's per-sentence truth."""
    e, problems = error.edit, []
    before = truth[e.before] if e.before is not None else []
    after = [f for s in split_sentences(e.after) for f in parse_sentence(s).facts]
    removed, added = fact_multiset_diff(before, after)
    if e.added is None:
        ok = len(removed) == len(added) == 1 and removed[0].differing(added[0]) == [e.attribute]
        ok = ok and e.attribute in CHANGES[error.kind]
        if error.kind is ErrorKind.SEVERITY_CHANGE:
            ok = ok and removed[0].presence is not Presence.NEGATIVE  # never a denied finding's size
        if error.kind is ErrorKind.FALSE_PREDICTION:
            ok = ok and added[0].presence is Presence.POSITIVE
        if error.kind is ErrorKind.FALSE_NEGATION:
            ok = ok and added[0].presence is Presence.NEGATIVE
    else:
        ok = not removed and added == [e.added.asserted()]
        subjects = {f.subject: f.presence for fs in truth.values() for f in fs}
        if error.kind is ErrorKind.ADD_DEVICE:
            ok = ok and e.added.is_device and e.added.subject not in subjects
        else:  # the added sentence contradicts a stated finding (or a normal-study statement)
            ok = ok and (subjects.get(e.added.subject, e.added.presence) != e.added.presence
                         or "No Finding" in subjects)
    if not ok:
        problems.append(f"facts {removed} -> {added}")
    if fact_multiset_diff(e.expected_facts(), after) != ([], []):
        problems.append("the edit does not state what it reports")
    sections = [list(s.sentences) for s in parse_sections(text)]
    j = e.sentence
    sections[e.section][j:j + (e.before is not None)] = split_sentences(e.after)
    if sections != [s.sentences for s in parse_sections(error.text)]:
        problems.append("another sentence changed")
    for a in re.finditer(r"\b(a|an) (\w+)", e.after, re.IGNORECASE):
        if a.group(1).lower() != article(a.group(2)):
            problems.append(f"article: {a.group(0)}")
    if re.search(r"\b(\w+) \1\b", e.after, re.IGNORECASE) and not re.search(r"\b(\w+) \1\b", e.before or "",
                                                                             re.IGNORECASE):
        problems.append("doubled word")
    for unit in split_sentences(e.after):
        if PREFIX.sub("", unit)[:1].islower():
            problems.append("starts in lower case")
    return problems


@pytest.fixture(scope="module")
def corpus():
    studies = realistic_corpus(2000, seed=9)
    return studies, corpus_records(studies)


def test_every_error_changes_exactly_one_attribute_of_one_fact(corpus):
    studies, records = corpus
    counts, failures = Counter(), []
    for study, record in zip(studies, records, strict=True):
        text = compose_report_text(record.report)
        truth = {m.sentence: list(m.facts) for m in study.mentions}
        rng = random.Random(study.study_id)
        for kind, inject in ERROR_FUNCTIONS.items():
            error = inject(text, rng)
            if error is None:
                continue
            assert error.kind is kind and error.text != text
            counts[kind] += 1
            problems = _check(text, truth, error)
            if problems:
                failures.append((kind.value, error.edit.before, error.edit.after, problems))
    print("errors per category over 2000 realistic reports:", {k.value: counts[k] for k in ErrorKind})
    assert not failures, failures[:5]
    assert set(counts) == set(ErrorKind) and min(counts.values()) >= 100, counts


def test_coverage_of_the_realistic_corpus(corpus):
    """An error of some category applies to >= 90% of reports (and of impressions, the error benchmark's input)."""
    studies, records = corpus
    reports = Counter()
    impressions = Counter()
    n_imp = 0
    for record in records:
        rng = random.Random(record.study_id)
        kinds = {e.kind for e in applicable_errors(compose_report_text(record.report), rng)}
        reports.update(k.value for k in kinds)
        reports["any"] += bool(kinds)
        reports["any of 1-6"] += bool(kinds & set(PREFERRED_KINDS))
        if record.report.impression:
            n_imp += 1
            kinds = {e.kind for e in applicable_errors(record.report.impression, rng)}
            impressions.update(k.value for k in kinds)
            impressions["any"] += bool(kinds)
            impressions["any of 1-6"] += bool(kinds & set(PREFERRED_KINDS))
    print("coverage, reports:", dict(reports), "of", len(records))
    print("coverage, impressions:", dict(impressions), "of", n_imp)
    assert reports["any"] >= 0.9 * len(records) and reports["any of 1-6"] >= 0.9 * len(records)
    assert impressions["any"] >= 0.9 * n_imp and impressions["any of 1-6"] >= 0.9 * n_imp


R = random.Random


def test_negation_list_loses_one_item_only():
    text = "No pneumothorax or pleural effusion."
    outs = {false_prediction(text, R(s)).text for s in range(20)}
    assert outs == {"No pleural effusion. Pneumothorax is present.", "No pneumothorax. Pleural effusion is present."}
    three = "There is no pneumothorax, pleural effusion, or focal consolidation."
    outs = {false_prediction(three, R(s)).text for s in range(30)}
    assert "There is no pneumothorax or focal consolidation. Pleural effusion is present." in outs
    assert all(o.count(" is present.") == 1 for o in outs)


@pytest.mark.parametrize("text, expected", [
    ("No pneumothorax.", "Pneumothorax."),
    ("Pneumothorax is not seen.", "Pneumothorax is seen."),
    ("Heart size is normal.", "Heart size is enlarged."),
    ("The heart is normal in size.", "The heart is enlarged."),
    ("Possible right lower lobe pneumonia.", "Right lower lobe pneumonia."),
    ("A small left pleural effusion cannot be excluded.", "A small left pleural effusion is present."),
    ("Left basilar opacity, possibly pneumonia.", "Left basilar opacity, consistent with pneumonia."),
    ("? RLL PNA.", "RLL PNA."),
])
def test_false_prediction_rewrites(text, expected):
    assert false_prediction(text, R(0)).text == expected


def test_severity_never_touches_a_denied_finding():
    assert change_severity("No large pleural effusion.", R(0)) is None
    assert change_severity("Small left effusion. No large pneumothorax.", R(0)).text == \
        "Large left effusion. No large pneumothorax."
    assert change_severity("There is a small left effusion.", R(0)).text == "There is a large left effusion."
    assert change_severity("The heart is mildly enlarged.", R(0)).text == "The heart is severely enlarged."
    assert change_severity("Stable moderate cardiomegaly.", R(3)).edit.attribute in (Attribute.SEVERITY,
                                                                                      Attribute.TREND)


def test_location_change_beyond_left_right():
    outs = {change_location("Right upper lobe opacity.", R(s)).text for s in range(20)}
    assert outs == {"Left upper lobe opacity.", "Right lower lobe opacity."}
    assert {change_location("Opacity in the RLL.", R(s)).text for s in range(20)} == \
        {"Opacity in the LLL.", "Opacity in the RUL."}
    assert change_location("Retrocardiac opacity.", R(0)).text == "Perihilar opacity."
    assert change_location("Mild perihilar edema.", R(0)).text == "Mild basilar edema."
    assert {change_location("Small right apical pneumothorax.", R(s)).text for s in range(20)} == \
        {"Small left apical pneumothorax.", "Small right basilar pneumothorax."}
    assert change_location("Bilateral pleural effusions.", R(0)) is None  # no single side to move to


def test_false_negation_measurement_and_added_sentences():
    assert false_negation("[IMPRESSION] 1. No pneumothorax. 2. Stable moderate left pleural effusion.", R(0)).text \
        == "[IMPRESSION] 1. No pneumothorax. 2. No left pleural effusion."
    assert false_negation("Moderate cardiomegaly with no pleural effusion.", R(0)) is None  # two facts
    assert change_measurement("A 5 mm nodule in the RUL.", R(0)).text in ("A 10 mm nodule in the RUL.",
                                                                         "A 15 mm nodule in the RUL.")
    assert change_measurement("A 1.2 cm nodule.", R(1)).text in ("A 2.4 cm nodule.", "A 3.6 cm nodule.")
    assert {change_measurement("A 9 mm nodule.", R(s)).text for s in range(10)} == {"An 18 mm nodule.",
                                                                                   "A 27 mm nodule."}
    assert change_measurement("ETT 4 cm above carina.", R(0)).text == "ETT 2 cm above carina."
    assert add_opposite_sentence("Small left pleural effusion.", R(0)).text == \
        "Small left pleural effusion. No left pleural effusion."
    assert add_opposite_sentence("[IMPRESSION] 1. No pneumothorax 2. Normal heart size", R(0)).text.startswith(
        "[IMPRESSION] 1. No pneumothorax 2. Normal heart size 3. ")
    added = add_medical_device("No acute process.", R(0))
    assert added.edit.added.is_device and added.text.startswith("No acute process. ")


def test_device_name_and_position():
    assert change_device_name("ETT 4 cm above carina.", R(0)).text == "NGT 4 cm above carina."
    assert change_device_name("An endotracheal tube is in place.", R(0)).text == "A nasogastric tube is in place."
    assert change_device_position("ET tube terminates 4 cm above the carina.", R(0)).text == \
        "ET tube terminates 4 cm below the carina."
    assert change_device_position("NG tube tip is in the stomach.", R(0)).text == "NG tube tip is in the esophagus."
    assert change_device_position("Right IJ line tip projects over the mid SVC.", R(0)).text == \
        "Right IJ line tip projects over the right atrium."
    assert change_device_position("Endotracheal tube is in standard position.", R(0)).text == \
        "Endotracheal tube is malpositioned."


def test_inject_error_prefers_finding_categories():
    text = "ETT in standard position. Small left effusion. No pneumothorax."
    kinds = {inject_error(text, R(s)).kind for s in range(40)}
    assert kinds and kinds <= set(PREFERRED_KINDS) and len(kinds) >= 3
    assert inject_error(text, R(4)) == inject_error(text, R(4))
    device_only = inject_error("ETT in standard position.", R(0))
    assert device_only.kind in (ErrorKind.ADD_OPPOSITE_SENTENCE, ErrorKind.DEVICE_CHANGE,
                                ErrorKind.DEVICE_POSITION, ErrorKind.ADD_DEVICE)
    only = inject_error(text, R(0), kinds=[ErrorKind.SEVERITY_CHANGE])
    assert only.kind is ErrorKind.SEVERITY_CHANGE and only.text.startswith("ETT in standard position. Large")
    assert inject_error("Lungs are clear.", R(0)).kind is ErrorKind.ADD_DEVICE


def test_added_sentences_respect_the_findings_as_context():
    findings = "Endotracheal tube terminates 4 cm above the carina. Small left pleural effusion."
    for s in range(20):
        added = add_medical_device("No acute process.", R(s), context=findings)
        assert added.edit.added.subject != "endotracheal tube"
        opposite = add_opposite_sentence("No acute process.", R(s), context=findings)
        assert opposite.edit.added.subject != "Pleural Effusion"
    with_context = applicable_errors("No acute process.", R(0), context=findings)
    assert {e.kind for e in with_context} == {ErrorKind.ADD_OPPOSITE_SENTENCE, ErrorKind.ADD_DEVICE}
