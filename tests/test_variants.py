"""Rule-based report variants, abbreviation lexicon and anatomical classification."""

from __future__ import annotations

import random

import pytest

from cxr.reports.abbreviations import contract_abbreviations, expand_abbreviations, find_abbreviations
from cxr.reports.anatomy import AnatomicalRegion, classify_sentence
from cxr.reports.sentences import all_sentences, parse_sections, render_sections
from cxr.reports.variants import (
    VariantKind,
    anatomical_partition,
    is_noncritical,
    make_variants,
    omit_sentences,
    partition_by_region,
    sentence_shuffle,
    sentence_split,
)

REPORT = ("[FINDINGS] Portable AP view of the chest. ETT tip is 4 cm above the carina. There is a small left "
          "pleural effusion. No pneumothorax. Heart size is normal. Mild RLL atelectasis. No acute fracture. "
          "[IMPRESSION] Small left PLEFF. No PTX.")


def test_parse_and_render_round_trip():
    sections = parse_sections(REPORT)
    assert [s.tag for s in sections] == ["[FINDINGS]", "[IMPRESSION]"]
    assert len(sections[0].sentences) == 7
    assert render_sections(sections) == REPORT
    assert parse_sections("Just text. Two.")[0].tag is None


@pytest.mark.parametrize("text, expected", [
    ("Small PTX.", "Small pneumothorax."),
    ("PTX is resolved.", "Pneumothorax is resolved."),
    ("b/l effusions.", "Bilateral effusions."),
    ("New B/L opacities.", "New bilateral opacities."),
    ("Seen on C.X.R.", "Seen on chest X-ray."),
    ("C.X.R. shows GGO in RULF.", "Chest X-ray shows ground-glass opacity in right upper lung field."),
    ("The ET tube and NGT are present.", "The endotracheal tube and nasogastric tube are present."),
    ("Blunting of the left CP angle.", "Blunting of the left costophrenic angle."),
    ("Right IJ line ends in the SVC.", "Right internal jugular line ends in the superior vena cava."),
    ("[FINDINGS] AP view. [IMPRESSION] CHF.", "[FINDINGS] Anteroposterior view. [IMPRESSION] Congestive heart failure."),
])
def test_expansion(text, expected):
    assert expand_abbreviations(text, random.Random(0)) == expected


def test_expansion_is_word_boundary_safe():
    # PA inside PAIN / IMPACT, AP inside APEX, CHF inside a longer token, and/or slash words: untouched
    for text in ("PAIN at the APEX.", "Impacted CHFX device.", "and/or pleural thickening.", "RLLX."):
        assert expand_abbreviations(text, random.Random(0)) is None
        assert find_abbreviations(text) == []


def test_contraction_subset_and_sentence_start():
    text = "Bilateral pleural effusions. Right lower lobe opacity. No pneumothorax."
    outs = {contract_abbreviations(text, random.Random(s)) for s in range(20)}
    assert None not in outs and text not in outs
    assert "B/L PLEFF. RLL opacity. No PTX." in outs  # everything contracted, sentence-initial b/l upper-cased
    assert any("Right lower lobe" in o for o in outs)  # some draws contract only a subset
    assert contract_abbreviations("Heart is normal.", random.Random(0)) is None


def test_expand_after_contract_restores_terms():
    text = "Right lower lobe opacity and small pneumothorax."
    short = contract_abbreviations(text, random.Random(3))
    assert expand_abbreviations(short, random.Random(0)) == text


@pytest.mark.parametrize("sentence, region", [
    ("ETT tip is 4 cm above the carina.", AnatomicalRegion.DEVICES),
    ("Right IJ catheter ends in the SVC.", AnatomicalRegion.DEVICES),
    ("Small left pleural effusion.", AnatomicalRegion.PLEURA),
    ("No PTX.", AnatomicalRegion.PLEURA),
    ("Heart size is normal.", AnatomicalRegion.HEART_MEDIASTINUM),
    ("Mediastinal contours are unremarkable.", AnatomicalRegion.HEART_MEDIASTINUM),
    ("No acute fracture.", AnatomicalRegion.BONES),
    ("Degenerative changes of the spine.", AnatomicalRegion.BONES),
    ("Mild RLL atelectasis.", AnatomicalRegion.LUNGS),
    ("Lungs are clear.", AnatomicalRegion.LUNGS),
    ("Comparison is made to the prior study.", AnatomicalRegion.OTHER),
])
def test_classify_sentence(sentence, region):
    assert classify_sentence(sentence) is region


def test_anatomical_partition_returns_one_region():
    groups = partition_by_region(REPORT)
    assert set(groups) >= {AnatomicalRegion.DEVICES, AnatomicalRegion.PLEURA, AnatomicalRegion.LUNGS}
    seen = set()
    for seed in range(30):
        out = anatomical_partition(REPORT, random.Random(seed))
        regions = {classify_sentence(s) for s in all_sentences(out)}
        assert len(regions) == 1 and AnatomicalRegion.OTHER not in regions
        seen |= regions
    assert len(seen) >= 4
    assert anatomical_partition("Lungs are clear. No focal consolidation.", random.Random(0)) is None


def test_omission_drops_only_noncritical_sentences():
    original = all_sentences(REPORT)
    critical = [s for s in original if not is_noncritical(s)]
    assert "There is a small left pleural effusion." in critical and "Small left PLEFF." in critical
    assert "No pneumothorax." not in critical
    sizes = set()
    for seed in range(20):
        out = omit_sentences(REPORT, random.Random(seed))
        kept = all_sentences(out)
        assert all(s in kept for s in critical)
        assert len(kept) < len(original)
        sizes.add(len(kept))
    assert len(sizes) > 1  # one or more sentences dropped
    assert omit_sentences("Small left effusion.", random.Random(0)) is None
    # an impression-only section that loses all its sentences loses its tag too
    out = omit_sentences("[FINDINGS] Left effusion. [IMPRESSION] No acute process.", random.Random(0))
    assert out == "[FINDINGS] Left effusion."


def test_split_and_shuffle():
    assert sentence_split(REPORT, random.Random(0)) in all_sentences(REPORT)
    assert sentence_split("One sentence only.", random.Random(0)) is None
    out = sentence_shuffle(REPORT, random.Random(0))
    assert out != REPORT and sorted(all_sentences(out)) == sorted(all_sentences(REPORT))
    assert sentence_shuffle("[FINDINGS] One. [IMPRESSION] Two.", random.Random(0)) is None


def test_make_variants_tags_kinds_and_is_deterministic():
    a = make_variants(REPORT, random.Random(7))
    b = make_variants(REPORT, random.Random(7))
    assert a == b
    assert {v.kind for v in a} == set(VariantKind) - {VariantKind.PARAPHRASE}
    assert all(v.text != REPORT and v.text.strip() for v in a)
    only = make_variants(REPORT, random.Random(0), kinds=[VariantKind.OMISSION])
    assert [v.kind for v in only] == [VariantKind.OMISSION]
    with pytest.raises(ValueError, match="paraphrase"):
        make_variants(REPORT, random.Random(0), kinds=[VariantKind.PARAPHRASE])
