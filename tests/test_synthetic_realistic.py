"""Realistic report styles of the synthetic world: the messy features real reports have, with per-sentence truth."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from cxr.data.synthetic import write_synthetic_dataset
from cxr.data.synthetic.corpus import corpus_records, main, realistic_corpus
from cxr.data.synthetic.findings import ReportStyle, Section
from cxr.data.synthetic.realistic import REALISTIC_STYLES, article
from cxr.data.synthetic.reports import labels_from_mentions
from cxr.data.synthetic.world import sample_world
from cxr.labels import OBSERVATION_INDEX, LabelState
from cxr.reports.facts import NO_FINDING, Fact, Presence, Trend


@pytest.fixture(scope="module")
def corpus():
    return realistic_corpus(2400, seed=3)


def test_deterministic_and_legacy_default_unchanged():
    a, b = realistic_corpus(80, seed=1), realistic_corpus(80, seed=1)
    assert [s.report_text for s in a] == [s.report_text for s in b]
    assert [s.mentions for s in a] == [s.mentions for s in b]
    assert [s.report_text for s in a] != [s.report_text for s in realistic_corpus(80, seed=2)]
    legacy = sample_world(80, seed=1)
    assert {s.style for s in legacy} <= {ReportStyle.STRUCTURED, ReportStyle.IMPRESSION_ONLY, ReportStyle.HOSPITAL}
    assert all(m.facts == () for s in legacy for m in s.mentions)
    # same patients, splits and ids: only the report text differs between the mixes
    assert [(s.study_id, s.split) for s in legacy] == [(s.study_id, s.split) for s in a]


def test_corpus_has_every_style(corpus):
    styles = Counter(s.style for s in corpus)
    assert set(styles) == set(REALISTIC_STYLES) and len(styles) >= 8
    assert min(styles.values()) >= 100, styles


def _impressions(corpus, style):
    return [s.impression_text for s in corpus if s.style is style and s.impression_text]


def test_real_report_features_are_present(corpus):
    text = "\n".join(s.report_text for s in corpus)
    numbered = [t for t in _impressions(corpus, ReportStyle.NUMBERED) if re.match(r"1[.)] \S", t)]
    assert len(numbered) > 200 and any(re.search(r" 2[.)] [A-Z]", t) for t in numbered)
    assert any(re.search(r"[a-z] 2[.)] [A-Z]", t) for t in numbered), "items without a closing period"
    assert all(t.startswith(("- ", "* ")) for t in _impressions(corpus, ReportStyle.BULLETED))
    assert "XXXX" in text and "___" in text and "Dr. ___" in text
    for header in ("INDICATION:", "HISTORY:", "COMPARISON:", "LUNGS:", "PLEURA:", "LINES/TUBES:"):
        assert header in text, header
    for phrase in ("again seen", "redemonstrated", "unchanged", "Stable", "Compared to", "cm above the carina",
                   " mm ", " cm ", "No pneumothorax, ", ", or "):
        assert phrase in text, phrase
    assert any(s.findings_text and s.impression_text is None for s in corpus)
    assert any(s.impression_text and s.findings_text is None for s in corpus)
    assert any(s.report_text.isupper() is False and s.impression_text and s.impression_text.isupper()
               for s in corpus), "all-caps hospital impressions"


def test_truth_covers_the_clinical_attributes(corpus):
    facts = [f for s in corpus for m in s.mentions for f in m.facts]
    stable_positive = [f for f in facts if f.trend is Trend.STABLE and f.presence is Presence.POSITIVE]
    assert len(stable_positive) > 100
    lists = [m for s in corpus for m in s.mentions if sum(f.presence is Presence.NEGATIVE for f in m.facts) >= 3]
    assert len(lists) > 50, "No A, B, or C. negation lists"
    assert sum(f.size_mm is not None and not f.is_device for f in facts) > 20
    assert sum(f.size_mm is not None and f.is_device for f in facts) > 20
    assert sum(f.position is not None for f in facts) > 100
    for attr in ("severity", "laterality", "location"):
        assert sum(getattr(f, attr) is not None for f in facts) > 300, attr
    assert {f.presence for f in facts} == set(Presence)
    assert any(f.subject == NO_FINDING for f in facts)


def test_labels_and_mentions_agree_with_the_text(corpus):
    for s in corpus:
        assert np.array_equal(s.labels, labels_from_mentions(s.mentions))
        for m in s.mentions:
            section_text = s.findings_text if m.section is Section.FINDINGS else s.impression_text
            assert m.sentence in section_text and m.sentence in s.report_text
        for name, f in s.findings.items():
            assert s.labels[OBSERVATION_INDEX[name]] == f.state, (name, s.report_text)
        assert (s.labels[OBSERVATION_INDEX["Support Devices"]] == LabelState.POSITIVE) == bool(s.devices)
        sentence_facts = [f for m in s.mentions for f in m.facts if not f.is_device and f.subject != NO_FINDING]
        for f in sentence_facts:  # every stated fact is a finding of the world with that presence
            state = {Presence.POSITIVE: LabelState.POSITIVE, Presence.UNCERTAIN: LabelState.UNCERTAIN,
                     Presence.NEGATIVE: LabelState.NEGATIVE}[f.presence]
            assert s.findings[f.subject].state == state


def test_fact_json_round_trip_and_article():
    f = realistic_corpus(40, seed=0)
    for s in f:
        for m in s.mentions:
            assert tuple(Fact.from_json(x.to_json()) for x in m.facts) == m.facts
    with pytest.raises(ValueError, match="unknown fact field"):
        Fact.from_json({"subject": "Edema", "colour": "red"})
    assert [article(w) for w in ("8 mm nodule", "small", "endotracheal", "11 mm", "unilateral")] == \
        ["an", "a", "an", "an", "a"]


def test_corpus_cli_and_records(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--num-reports", "60", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "wrote 60 reports" in out and "pneumothorax" not in out.lower()
    from cxr.data.pairs.pairs import records_from_report_manifest
    records = records_from_report_manifest(tmp_path / "reports.csv")
    assert len(records) == 60
    in_memory = corpus_records(realistic_corpus(60, seed=4))
    assert [r.report.impression or None for r in records] == [r.report.impression for r in in_memory]
    lines = (tmp_path / "report_facts.jsonl").read_text().splitlines()
    assert len(lines) == 60 and '"facts"' in lines[0]


@pytest.mark.parametrize("layout", ["csv", "mimic-cxr-jpg", "chexpert-plus", "openi"])
def test_realistic_world_writes_and_loads_in_every_layout(tmp_path, layout):
    from cxr.data.sources import ChexpertPlusSource, CsvManifestSource, MimicCxrSource, OpenISource
    from cxr.data.synthetic import load_synthetic_truth
    from cxr.data.validation import ProblemLog
    from cxr.reports.compose import normalize_whitespace

    studies = write_synthetic_dataset(tmp_path, layout, 60, seed=2, image_size=32, report_styles="realistic")
    assert any(s.impression_text is None for s in studies) and any(s.findings_text is None for s in studies)
    source = {"csv": lambda: CsvManifestSource("synthetic", str(tmp_path / "manifest.csv")),
              "mimic-cxr-jpg": lambda: MimicCxrSource(str(tmp_path)),
              "chexpert-plus": lambda: ChexpertPlusSource(str(tmp_path)),
              "openi": lambda: OpenISource(str(tmp_path))}[layout]()
    problems = ProblemLog()
    records = {r.study_id: r for r in source.load(problems)}
    assert not problems.problems, problems.problems[:3]
    for t in load_synthetic_truth(tmp_path):
        rec = records[t.study_id]
        for got, want in ((rec.report.findings, t.findings_text), (rec.report.impression, t.impression_text)):
            assert normalize_whitespace(got or "") == normalize_whitespace(want or ""), (got, want)
