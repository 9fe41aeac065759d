"""Omission never removes a positive or uncertain finding: checked against the synthetic world's truth."""

from __future__ import annotations

import random
from collections import Counter

from cxr.data.synthetic.corpus import corpus_records, realistic_corpus
from cxr.reports.compose import compose_report_text
from cxr.reports.facts import NO_FINDING, Presence
from cxr.reports.sentences import all_sentences, strip_marker
from cxr.reports.variants import is_noncritical, omit_sentences


def _kept_facts(truth: dict[str, list[list]], sentences: list[str]) -> Counter:
    """Present/hedged findings and devices of the generated mentions the sentences are (list markers aside; a
    normal-study statement is a normal statement and may go)."""
    pool = {k: list(v) for k, v in truth.items()}
    out = Counter()
    for s in sentences:
        facts = pool[strip_marker(s)].pop()
        out.update(f for f in facts if f.presence is not Presence.NEGATIVE and f.subject != NO_FINDING)
    return out


def test_omission_keeps_every_positive_and_uncertain_finding():
    studies = realistic_corpus(2000, seed=31)
    applied = dropped = 0
    for study, record in zip(studies, corpus_records(studies), strict=True):
        text = compose_report_text(record.report)
        truth: dict[str, list[list]] = {}
        for m in study.mentions:
            truth.setdefault(strip_marker(m.sentence), []).append(list(m.facts))
        original = _kept_facts(truth, all_sentences(text))
        for seed in range(3):
            out = omit_sentences(text, random.Random(f"{study.study_id}:{seed}"))
            if out is None:
                continue
            applied += 1
            kept = all_sentences(out)
            dropped += len(all_sentences(text)) - len(kept)
            assert _kept_facts(truth, kept) == original, (text, out)
    assert applied > 3000 and dropped > applied  # omission still applies widely and drops sentences


def test_stable_and_unchanged_findings_are_critical():
    for sentence in ("Stable marked cardiomegaly.", "Unchanged small left pleural effusion.",
                     "Effusion is again seen.", "Redemonstrated right basilar atelectasis.",
                     "1. Stable cardiomegaly.", "Possible pneumonia.", "ETT in standard position.",
                     "No new consolidation.", "Degenerative changes of the spine.", "Stable appearance of the chest."):
        assert not is_noncritical(sentence), sentence
    for sentence in ("No pneumothorax, pleural effusion, or focal airspace disease.", "Heart size is normal.",
                     "The lungs are clear.", "No acute cardiopulmonary process.", "PA and lateral views of the chest.",
                     "Compared to ___, there is no significant interval change.", "XXXX XXXX are intact.",
                     "2. No pneumothorax."):
        assert is_noncritical(sentence), sentence
