"""Error injection on hand-written reports: case, words that only look like sides, section tags.

The property test over the realistic synthetic corpus (every category changes exactly one attribute of one fact)
is ``tests/test_report_errors.py``.
"""

from __future__ import annotations

import random

from cxr.reports.errors import ErrorKind, applicable_errors, change_location, false_prediction, inject_error
from cxr.reports.sentences import all_sentences


def _diff(a: str, b: str) -> list[tuple[str, str]]:
    return [(x, y) for x, y in zip(all_sentences(a), all_sentences(b), strict=False) if x != y]


def test_location_change_keeps_case_and_ignores_words_that_are_not_sides():
    text = "LEFT pleural effusion. Right and left hila are normal. Left lower lobe opacity."
    outs = {change_location(text, random.Random(s)).text for s in range(30)}
    assert outs == {"RIGHT pleural effusion. Right and left hila are normal. Left lower lobe opacity.",
                    "LEFT pleural effusion. Right and left hila are normal. Right lower lobe opacity.",
                    "LEFT pleural effusion. Right and left hila are normal. Left upper lobe opacity."}
    assert change_location("Bright spot, leftover contrast.", random.Random(0)) is None


def test_one_sentence_changes_and_tags_stay():
    text = "[FINDINGS] No interval change. No pneumothorax. Heart is normal. [IMPRESSION] Small effusion."
    for seed in range(10):
        out = false_prediction(text, random.Random(seed)).text
        changed = _diff(text, out)
        assert out.startswith("[FINDINGS] ") and " [IMPRESSION] " in out
        assert len(changed) == 1 and changed[0][0] in ("No pneumothorax.", "Heart is normal.")
    assert false_prediction("No interval change. Lungs are clear.", random.Random(0)) is None


def test_applicable_kinds_on_a_mixed_report():
    text = "ETT 4 cm above the carina. Small left effusion. No pneumothorax. A 6 mm nodule in the RUL."
    kinds = {e.kind for e in applicable_errors(text, random.Random(0))}
    assert kinds == set(ErrorKind)
    assert inject_error(text, random.Random(4)) == inject_error(text, random.Random(4))
