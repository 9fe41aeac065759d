"""Sentence splitting of real report shapes: numbered and bulleted lists, hedges, abbreviations (issue item 1)."""

from __future__ import annotations

import random
import re

import pytest

from cxr.data.synthetic.corpus import corpus_records, realistic_corpus
from cxr.data.synthetic.world import sample_world
from cxr.reports.compose import compose_report_text
from cxr.reports.sentences import parse_sections, render_sections, renumber, split_sentences, strip_marker
from cxr.reports.shuffle import shuffle_sentences
from cxr.reports.variants import make_variants

FRAGMENT = re.compile(r"^[\W\d_]*$")  # nothing but numbering, bullets and punctuation


@pytest.mark.parametrize("text, units", [
    ("1. No acute disease. 2. Stable cardiomegaly.", ["1. No acute disease.", "2. Stable cardiomegaly."]),
    ("1. Small left effusion 2. No pneumothorax", ["1. Small left effusion", "2. No pneumothorax"]),
    ("1) Cardiomegaly. 2) Mild edema.", ["1) Cardiomegaly.", "2) Mild edema."]),
    ("- Stable cardiomegaly. - No pneumothorax.", ["- Stable cardiomegaly.", "- No pneumothorax."]),
    ("* A. * B.", ["* A.", "* B."]),
    ("? R PLEFF. No PTX.", ["? R PLEFF.", "No PTX."]),
    ("Findings discussed with Dr. ___ at 10 am. No change.", ["Findings discussed with Dr. ___ at 10 am.",
                                                             "No change."]),
    ("A 1.2 cm nodule. Effusion - small, stable.", ["A 1.2 cm nodule.", "Effusion - small, stable."]),
    ("IMPRESSION: 1. A. 2.", ["IMPRESSION: 1. A. 2."]),  # a trailing bare number joins its neighbour
    ("Lungs clear... Heart normal!", ["Lungs clear...", "Heart normal!"]),
])
def test_split_keeps_list_markers_with_their_item(text, units):
    assert split_sentences(text) == units


def test_renumber_and_strip():
    assert renumber(["2. B.", "Also C.", "1. A."]) == ["1. B.", "Also C.", "2. A."]
    assert renumber(["3) C", "2) B"]) == ["1) C", "2) B"]
    assert [strip_marker(s) for s in ("1. A.", "- B.", "* C.", "C.")] == ["A.", "B.", "C.", "C."]


def test_generated_reports_split_into_exactly_their_sentences():
    """Every generated section splits into the sentences it was written from: no fragment, no merge."""
    for studies in (realistic_corpus(2000, seed=21), sample_world(1000, seed=21)):
        for s in studies:
            for section, text in (("findings", s.findings_text), ("impression", s.impression_text)):
                if text:
                    assert split_sentences(text) == [m.sentence for m in s.mentions
                                                      if m.section.value == section], text


def test_no_variant_or_shuffle_produces_a_fragment():
    seen = 0
    for record in corpus_records(realistic_corpus(2000, seed=22)):
        text = compose_report_text(record.report)
        rng = random.Random(record.study_id)
        outputs = [v.text for v in make_variants(text, rng)] + [shuffle_sentences(text, rng)]
        for out in outputs:
            for sec in parse_sections(out):
                for unit in sec.sentences:
                    seen += 1
                    assert not FRAGMENT.match(unit), (text, out)
    assert seen > 20_000


def test_rendering_a_shuffled_or_shortened_list_renumbers_it():
    text = "[IMPRESSION] 1. Stable cardiomegaly. 2. Small left effusion. 3. No pneumothorax."
    outs = {shuffle_sentences(text, random.Random(seed)) for seed in range(20)}
    assert len(outs) > 2
    for out in outs:
        assert re.fullmatch(r"\[IMPRESSION\] 1\. [^0-9]+ 2\. [^0-9]+ 3\. [^0-9]+", out), out
    sections = parse_sections(text)
    del sections[0].sentences[0]
    assert render_sections(sections) == "[IMPRESSION] 1. Small left effusion. 2. No pneumothorax."
    assert render_sections(parse_sections(text)) == text
