"""Error injection (hard negatives)."""

from __future__ import annotations

import random

import pytest

from cxr.reports.errors import (
    ErrorKind,
    applicable_errors,
    device_change,
    device_position,
    inject_error,
    laterality_swap,
    negation_flip,
    severity_change,
)
from cxr.reports.sentences import all_sentences


def _diff(a: str, b: str) -> list[tuple[str, str]]:
    return [(x, y) for x, y in zip(all_sentences(a), all_sentences(b), strict=False) if x != y]


def test_laterality_swap_preserves_case_and_skips_two_sided_sentences():
    text = "LEFT pleural effusion. Right and left hila are normal. Left lower lobe opacity."
    outs = {laterality_swap(text, random.Random(s)) for s in range(20)}
    assert outs == {"RIGHT pleural effusion. Right and left hila are normal. Left lower lobe opacity.",
                    "LEFT pleural effusion. Right and left hila are normal. Right lower lobe opacity."}
    assert laterality_swap("Opacity in the LLL.", random.Random(0)) == "Opacity in the RLL."
    assert laterality_swap("Bilateral effusions. Right and left sides.", random.Random(0)) is None
    # "leftover"/"bright" are not sides
    assert laterality_swap("Bright spot, leftover contrast.", random.Random(0)) is None


@pytest.mark.parametrize("text, expected", [
    ("No pneumothorax.", "Pneumothorax."),
    ("There is no pleural effusion.", "There is pleural effusion."),
    ("No evidence of pneumothorax.", "Evidence of pneumothorax."),
    ("Lungs clear without consolidation.", "Lungs clear with consolidation."),
    ("Pneumothorax is not seen.", "Pneumothorax is seen."),
    ("There is a small left pleural effusion.", "There is no small left pleural effusion."),
    ("Consolidation is seen in the RLL.", "Consolidation is not seen in the RLL."),
    ("Small left effusion.", "No small left effusion."),
    ("PTX on the right.", "No PTX on the right."),
])
def test_negation_flip_rules(text, expected):
    assert negation_flip(text, random.Random(0)) == expected


def test_negation_flip_changes_exactly_one_finding_sentence():
    text = "[FINDINGS] No interval change. No pneumothorax. Heart is normal. [IMPRESSION] Small effusion."
    for seed in range(10):
        out = negation_flip(text, random.Random(seed))
        changed = _diff(text, out)
        assert len(changed) == 1 and changed[0][0] in ("No pneumothorax.", "Small effusion.")
    assert negation_flip("No interval change. Heart is normal.", random.Random(0)) is None


def test_severity_change_swaps_one_word_with_case():
    assert severity_change("Small effusion.", random.Random(0)) == "Large effusion."
    assert severity_change("MILD edema.", random.Random(0)) == "SEVERE edema."
    outs = {severity_change("Mild edema, small effusion.", random.Random(s)) for s in range(20)}
    assert outs == {"Severe edema, small effusion.", "Mild edema, large effusion."}
    assert severity_change("Smallest hint. Normal heart.", random.Random(0)) is None


def test_device_name_and_position_changes():
    assert device_change("ETT tip at the carina.", random.Random(0)) == "NGT tip at the carina."
    assert device_change("The endotracheal tube is present.", random.Random(0)) == \
        "The nasogastric tube is present."
    assert device_change("No devices.", random.Random(0)) is None
    assert device_position("Tip is 4 cm above the carina.", random.Random(0)) == "Tip is 4 cm below the carina."
    assert device_position("NG tube ends in the stomach.", random.Random(0)) == "NG tube ends in the esophagus."
    assert device_position("Line is in standard position.", random.Random(0)) == "Line is malpositioned."
    assert device_position("Heart is normal.", random.Random(0)) is None


def test_inject_error_picks_an_applicable_kind_deterministically():
    text = "ETT in standard position. Small left effusion. No pneumothorax."
    kinds = {e.kind for e in applicable_errors(text, random.Random(0))}
    assert kinds == set(ErrorKind)
    picks = {inject_error(text, random.Random(s)).kind for s in range(40)}
    assert len(picks) >= 3
    assert inject_error(text, random.Random(4)) == inject_error(text, random.Random(4))
    only = inject_error(text, random.Random(0), kinds=[ErrorKind.SEVERITY_CHANGE])
    assert only.kind is ErrorKind.SEVERITY_CHANGE and only.text.startswith("ETT in standard position. Large")
    assert inject_error("Heart is normal.", random.Random(0)) is None
