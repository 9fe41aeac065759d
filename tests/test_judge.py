"""GREEN judge client: GREEN's prompt and parse rules, and a fake OpenAI-compatible server on 127.0.0.1 for retries,
resume, bounded concurrency, proxies, redirects (credentials) and logs without report text."""

from __future__ import annotations

import json
import logging

import pytest
from _fake_judge import FakeJudge, FakeJudgeServer, green_answer

from cxr.evaluation.judge import (
    GREEN_MAX_WORDS,
    JudgeClient,
    JudgeConfig,
    JudgeError,
    JudgePair,
    clean_response,
    green_from_response,
    green_prompt,
    judge_pairs,
    parse_error_counts,
    read_results,
)

# A GREEN-format analysis (the layout of the GREEN repository's reference outputs).
ANALYSIS = """
The candidate misses the effusion and places the opacity on the wrong side.

[Clinically Significant Errors]:
(a) False report of a finding in the candidate: 2. Low lung volumes; Mild edema.
(b) Missing a finding present in the reference: 1. Small left effusion.
(c) Misidentification of a finding's anatomic location/position: 2. Opacity on the right; Tube.
(d) Misassessment of the severity of a finding: 0.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Clinically Insignificant Errors]:
(a) False report of a finding in the candidate: 0.
(b) Missing a finding present in the reference: 3. x; y; z.
(c) Misidentification of a finding's anatomic location/position: 0.
(d) Misassessment of the severity of a finding: 0.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Matched Findings]:
1. Small left effusion."""


def test_prompt_is_greens_and_truncates_to_300_words():
    ref, cand = "No acute process. " * 200, "Left effusion."
    prompt = green_prompt(ref, cand)
    assert prompt.startswith("Objective: Evaluate the accuracy of a candidate radiology report in comparison to a "
                             "reference radiology report composed by expert radiologists.\n\n    Process Overview")
    assert "    3. Candidate Report:\n    Left effusion.\n\n    4. Reporting Your Assessment:" in prompt
    assert prompt.endswith("[Matched Findings]:\n    <The number of matched findings>. <Finding 1>; <Finding 2>; "
                           "...; <Finding n>\n    ```\n")
    reference = prompt.split("2. Reference Report:\n    ", 1)[1].split("\n\n    3. Candidate", 1)[0]
    assert len(reference.split()) == GREEN_MAX_WORDS


def test_parse_counts_and_score_follow_green():
    total, sig = parse_error_counts(ANALYSIS, "Clinically Significant Errors")
    assert (total, sig) == (5, [2, 1, 2, 0, 0, 0])
    assert parse_error_counts(ANALYSIS, "Clinically Insignificant Errors") == (3, [0, 3, 0, 0, 0, 0])
    assert parse_error_counts(ANALYSIS, "Matched Findings")[0] == 1
    result = green_from_response(ANALYSIS)
    # matched / (matched + significant errors): insignificant errors do not count
    assert result.score == pytest.approx(1 / 6) and result.sections_found
    with pytest.raises(ValueError):
        parse_error_counts(ANALYSIS, "Explanation")


def test_parse_edge_cases():
    zero_matched = ANALYSIS.replace("[Matched Findings]:\n1. Small left effusion.", "[Matched Findings]:\n0.")
    assert green_from_response(zero_matched).score == 0.0  # GREEN: 0 when nothing matched
    no_errors = "[Clinically Significant Errors]:\nNo errors.\n\n[Matched Findings]:\n4. a; b; c; d."
    assert green_from_response(no_errors).score == 1.0
    numbered = "[Clinically Significant Errors]:\n(1) False report: 1. x.\n(3) Location: 2. y; z.\n\n" \
               "[Matched Findings]:\n3. a; b; c."
    assert parse_error_counts(numbered, "Clinically Significant Errors") == (3, [1, 0, 2, 0, 0, 0])
    assert green_from_response(numbered).score == pytest.approx(0.5)
    garbage = green_from_response("I cannot help with that.")
    assert garbage.score == 0.0 and not garbage.sections_found
    # an echoed chat prompt and end-of-sequence tokens are stripped as GREEN does
    assert clean_response("<|user|>\nprompt</s>\n<|assistant|>\n[Matched Findings]:\n2. a; b.</s>") == \
        "\n[Matched Findings]:\n2. a; b."


def _pairs(n: int, tag: str = "") -> list[JudgePair]:
    # pair i: i % 3 + 1 matched findings, i % 2 errors (a), 1 error (c)
    return [JudgePair(f"ds:s{i}", f"Reference report {i}{tag}.", f"Candidate {i}{tag} M={i % 3 + 1} A={i % 2} C=1")
            for i in range(n)]


def _expected(pair: JudgePair) -> float:
    return green_from_response(green_answer(pair.candidate)).score


def test_scores_every_pair_with_bounded_concurrency(tmp_path):
    state = FakeJudge(delay_s=0.15)
    pairs = _pairs(9)
    with FakeJudgeServer(state) as server:
        summary = judge_pairs(pairs, JudgeConfig(server.url, workers=3), tmp_path / "j.jsonl", progress=False)
    assert summary.scored == 9 and summary.failed == 0 and summary.unparsed == 0
    assert summary.scores == {p.pair_id: pytest.approx(_expected(p)) for p in pairs}
    assert 1 < state.max_active <= 3  # really concurrent, never more than the bound
    body = state.requests[0]
    assert body["model"] == "StanfordAIMI/GREEN-RadLlama2-7b" and body["temperature"] == 0
    assert body["messages"][0]["role"] == "user" and body["messages"][0]["content"].startswith("Objective:")
    lines = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert sorted(r["pair_id"] for r in lines) == sorted(p.pair_id for p in pairs)
    assert {"green", "matched_findings", "significant_errors", "response", "input_hash"} <= set(lines[0])


def test_retries_transient_failures_with_backoff(tmp_path):
    state = FakeJudge(fail_first=2, fail_status=503)
    slept: list[float] = []
    pairs = _pairs(3)
    with FakeJudgeServer(state) as server:
        config = JudgeConfig(server.url, workers=2, max_retries=3, backoff_s=0.5, max_backoff_s=10)
        client = JudgeClient(config, sleep=slept.append)
        summary = judge_pairs(pairs, config, tmp_path / "j.jsonl", client=client, progress=False)
    assert summary.scored == 3 and len(state.requests) == 9  # two failures + one success per pair
    assert len(slept) == 6
    first, second = sorted(slept)[:3], sorted(slept)[3:]
    assert all(0.5 <= s <= 0.625 for s in first) and all(1.0 <= s <= 1.25 for s in second)  # doubling + jitter


def test_retry_after_is_honoured_and_retries_run_out(tmp_path):
    state = FakeJudge(fail_first=1, fail_status=429, retry_after="7")
    slept: list[float] = []
    with FakeJudgeServer(state) as server:
        config = JudgeConfig(server.url, workers=1, max_retries=2)
        summary = judge_pairs(_pairs(1), config, tmp_path / "a.jsonl", client=JudgeClient(config, slept.append),
                              progress=False)
        assert summary.scored == 1 and slept == [7.0]
        state.fail_first, state.seen = 99, type(state.seen)()
        slept.clear()
        summary = judge_pairs(_pairs(2, "b"), config, tmp_path / "b.jsonl",
                              client=JudgeClient(config, slept.append), progress=False)
    assert summary.failed == 2 and summary.scored == 0 and len(slept) == 4  # 2 retries per pair, then given up
    assert not (tmp_path / "b.jsonl").read_text().strip()  # nothing stored: a rerun retries them


def test_resume_sends_only_unscored_or_changed_pairs(tmp_path):
    pairs = _pairs(6)
    path = tmp_path / "j.jsonl"
    state = FakeJudge(fail_always={pairs[2].candidate}, fail_status=400)  # a per-pair, non-retryable failure
    with FakeJudgeServer(state) as server:
        first = judge_pairs(pairs, JudgeConfig(server.url, workers=2), path, progress=False)
        assert (first.scored, first.failed) == (5, 1) and len(state.requests) == 6
        with open(path, "a") as fh:
            fh.write('{"pair_id": "ds:s4", "gre')  # a run killed mid-write leaves a broken last line
        state.fail_always.clear()
        state.requests.clear()
        changed = pairs[:5] + [JudgePair(pairs[5].pair_id, pairs[5].reference, pairs[5].candidate + " M=1")]
        second = judge_pairs(changed, JudgeConfig(server.url, workers=2), path, progress=False)
    sent = sorted(FakeJudge.candidate_of(r["messages"][0]["content"]) for r in state.requests)
    assert sent == sorted([pairs[2].candidate, changed[5].candidate])  # the failed one and the changed one only
    assert (second.reused, second.scored, second.failed) == (4, 2, 0)
    assert second.scores == {p.pair_id: pytest.approx(_expected(p)) for p in changed}
    assert read_results(path)[pairs[5].pair_id]["green"] == pytest.approx(_expected(changed[5]))  # last line wins
    # another judge model is another judgement
    with FakeJudgeServer() as server:
        third = judge_pairs(changed, JudgeConfig(server.url, model="other"), path, progress=False)
    assert third.reused == 0 and third.scored == 6


def test_loopback_bypasses_environment_proxies(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there: a proxied request would fail
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with FakeJudgeServer() as server:
        summary = judge_pairs(_pairs(2), JudgeConfig(server.url, max_retries=0), tmp_path / "j.jsonl",
                              progress=False)
    assert summary.scored == 2


def test_redirect_is_refused_and_the_key_never_leaves_the_host(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_JUDGE_API_KEY", "s3cret-token")
    with FakeJudgeServer() as other, FakeJudgeServer(FakeJudge(redirect_to=other.url + "/chat/completions")) as a:
        with pytest.raises(JudgeError, match="redirect") as err:
            judge_pairs(_pairs(3), JudgeConfig(a.url, workers=1), tmp_path / "j.jsonl", progress=False)
        assert err.value.fatal
        assert a.state.headers[0]["Authorization"] == "Bearer s3cret-token"  # sent to the configured host
        assert other.state.requests == []  # ... and nowhere else
    with FakeJudgeServer() as server:
        judge_pairs(_pairs(1), JudgeConfig(server.url), tmp_path / "k.jsonl", progress=False)
        monkeypatch.delenv("CXR_JUDGE_API_KEY")
        judge_pairs(_pairs(1, "x"), JudgeConfig(server.url), tmp_path / "k.jsonl", progress=False)
        assert "Authorization" in server.state.headers[0] and "Authorization" not in server.state.headers[1]


def test_wrong_path_stops_the_run(tmp_path):
    with FakeJudgeServer() as server:
        with pytest.raises(JudgeError, match="HTTP 404"):
            judge_pairs(_pairs(5), JudgeConfig(server.url.replace("/v1", "/v2"), workers=1), tmp_path / "j.jsonl",
                        progress=False)
        assert len(server.state.requests) == 1


def test_logs_hold_no_report_or_judge_text(tmp_path, caplog):
    state = FakeJudge(fail_first=1, fail_status=500)
    pairs = _pairs(3, " SECRETWORD")
    caplog.set_level(logging.DEBUG)
    with FakeJudgeServer(state) as server:
        config = JudgeConfig(server.url)
        judge_pairs(pairs, config, tmp_path / "j.jsonl", client=JudgeClient(config, lambda s: None), progress=False)
    assert "retry 1/5" in caplog.text  # the failure was logged (status and counts only)
    assert "SECRETWORD" not in caplog.text and "Reference report" not in caplog.text
    assert "Matched Findings" not in caplog.text and "Some error" not in caplog.text


def test_endpoint_url_forms(tmp_path):
    assert JudgeConfig("http://127.0.0.1:8000/v1").endpoint() == "http://127.0.0.1:8000/v1/chat/completions"
    assert JudgeConfig("http://h:1/v1/chat/completions/").endpoint() == "http://h:1/v1/chat/completions"
    with pytest.raises(ValueError, match="http"):
        JudgeConfig("ftp://h/v1").endpoint()
    with pytest.raises(ValueError, match="unique"):
        judge_pairs([JudgePair("a", "r", "c"), JudgePair("a", "r", "d")], JudgeConfig("http://127.0.0.1:1/v1"),
                    tmp_path / "j.jsonl", progress=False)
