"""benchmarks/error_coverage.py and benchmarks/text_adaptation.py at tiny sizes (the figures come from full runs)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def coverage():
    yield _load("error_coverage")
    sys.modules.pop("error_coverage", None)


@pytest.fixture(scope="module")
def adaptation():
    yield _load("text_adaptation")
    sys.modules.pop("text_adaptation", None)


def test_error_coverage_is_at_least_90_percent(coverage, tmp_path, capsys):
    from cxr.reports.errors import ErrorKind

    assert coverage.main(["--num-reports", "200", "--seed", "5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "below 90%: none" in out and "| 9 | change_device_position |" in out
    res = json.loads((tmp_path / "error_coverage.json").read_text())
    assert res["num_reports"] == 200 and 0 < res["num_impressions"] <= 200
    for where, n in (("reports", res["num_reports"]), ("impressions", res["num_impressions"])):
        assert res[where]["any"] >= 0.9 * n and res[where]["any of 1-6"] >= 0.9 * n, res[where]
        assert res[where]["any"] <= n
    # every category of the taxonomy applies somewhere in the realistic reports
    assert {k.value for k in ErrorKind} <= set(res["reports"])
    # a threshold the corpus cannot reach fails the run
    assert coverage.main(["--num-reports", "50", "--seed", "5", "--min-share", "1.01"]) == 1


def test_text_adaptation_compare_flags_every_worse_metric(adaptation):
    before = {"a": {"R@1": 0.5, "mean_rank": 2.0}, "b": {"accuracy": 0.4, "margin": 0.1}}
    after = {"a": {"R@1": 0.6, "mean_rank": 2.5}, "b": {"accuracy": 0.4, "margin": 0.05}}
    rows, worse = adaptation.compare(before, [after])
    assert worse == ["a mean_rank", "b margin"]  # a higher mean rank is worse; an unchanged accuracy is not
    assert [r[:2] for r in rows] == [["a", "R@1"], ["a", "mean_rank"], ["b", "accuracy"], ["b", "margin"]]
    # several seeds: worse when any seed is worse; mean and worst change per metric
    better = {"a": {"R@1": 0.7, "mean_rank": 1.5}, "b": {"accuracy": 0.5, "margin": 0.2}}
    rows, worse = adaptation.compare(before, [better, after])
    assert worse == ["a mean_rank", "b margin"]
    assert rows[1] == ["a", "mean_rank", "2.000", "1.500", "2.500 ✗", "+0.000", "+0.500"]
    assert rows[0] == ["a", "R@1", "0.500", "0.700", "0.600", "+0.150", "+0.100"]
    assert adaptation.compare(before, [better, better])[1] == []


def test_text_adaptation_benchmarks_cover_both_directions(adaptation):
    from cxr.data.synthetic.corpus import corpus_records, realistic_corpus

    records = corpus_records(realistic_corpus(40, seed=1))
    bench = adaptation.build_benchmarks(records)
    names = set(bench.retrieval)
    for a, b in (("findings", "impression"), ("abbreviated", "expanded"), ("report", "variant"),
                 ("report", "labels")):
        assert {f"{a}→{b}", f"{b}→{a}"} <= names
    assert all(bench.retrieval.values()) and all(bench.choice.values())
    forward, reverse = bench.retrieval["findings→impression"], bench.retrieval["impression→findings"]
    assert [(it.query, it.answer) for it in forward] == [(it.answer, it.query) for it in reverse]
    # clinically identical texts share a key; different facts do not
    assert adaptation.clinical_key("No pneumothorax.") == adaptation.clinical_key("There is no pneumothorax.")
    assert adaptation.clinical_key("No pneumothorax.") != adaptation.clinical_key("Small pneumothorax.")


@pytest.mark.slow
def test_text_adaptation_runs_end_to_end_at_tiny_size(adaptation, tmp_path):
    rc = adaptation.main(["--num-reports", "40", "--steps", "2", "--batch-size", "4", "--max-length", "32",
                          "--train-seeds", "0,1", "--out", str(tmp_path), "--before", str(tmp_path / "before.json")])
    res = json.loads((tmp_path / "text_adaptation.json").read_text())
    assert rc == (1 if res["worse"] else 0)
    assert set(res["after"]) == {"0", "1"} and len(res["before"]) == 17
    assert all(set(after) == set(res["before"]) for after in res["after"].values())
    assert (tmp_path / "before.json").is_file() and "| benchmark |" in (tmp_path / "text_adaptation.md").read_text()
