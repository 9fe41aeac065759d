"""GREEN-style judge scoring of retrieved reports through an OpenAI-compatible chat endpoint.

The top-1 retrieved report of each image query is scored against the query's ground-truth report with GREEN's
published prompt and parse rules (Ostmeier et al., "GREEN: Generative Radiology Report Evaluation and Error
Notation", Findings of EMNLP 2024, arXiv:2405.03595; code github.com/Stanford-AIMI/GREEN, MIT licence):

    GREEN = matched / (matched + sum of clinically significant errors (a)-(f)),   0 when matched == 0

The judge is any OpenAI-compatible ``/chat/completions`` server (a locally served GREEN model, e.g. vLLM with
``StanfordAIMI/GREEN-RadLlama2-7b``, or another judge). The client is

* **resumable**: every scored pair is appended (one JSON line, flushed) to a results file keyed by pair id and a
  hash of the two reports and the judge model; a rerun scores only pairs without a matching line;
* **concurrent**: a bounded thread pool keeps at most ``workers`` requests in flight;
* **careful**: transient failures (connection errors, timeouts, HTTP 408/409/429/5xx) are retried with
  exponential backoff and jitter (``Retry-After`` honoured, capped); redirects are refused, so the API key (read
  from an environment variable, never from the command line) only ever goes to the configured host; proxies
  from the environment are bypassed for loopback hosts; logs carry counts, ids and HTTP status codes, never report
  text or judge output (the results file holds the judge's analysis, like the top-1 dumps hold the reports).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxr.llm_client import (
    LLMRequestError,
    RetryPolicy,
    bounded_map,
    build_opener,
    chat_completions_url,
    end_broken_line,
    post_chat,
)

log = logging.getLogger(__name__)

#: Sections of a GREEN analysis, as named by GREEN.
GREEN_CATEGORIES: tuple[str, str, str] = (
    "Clinically Significant Errors",
    "Clinically Insignificant Errors",
    "Matched Findings",
)
#: Error types (a)-(f), as named by GREEN.
GREEN_SUB_CATEGORIES: tuple[str, ...] = (
    "(a) False report of a finding in the candidate",
    "(b) Missing a finding present in the reference",
    "(c) Misidentification of a finding's anatomic location/position",
    "(d) Misassessment of the severity of a finding",
    "(e) Mentioning a comparison that isn't in the reference",
    "(f) Omitting a comparison detailing a change from a prior study",
)
#: Words per report GREEN keeps in the prompt (``make_prompt(..., max_len=300)``).
GREEN_MAX_WORDS = 300
DEFAULT_JUDGE_MODEL = "StanfordAIMI/GREEN-RadLlama2-7b"
API_KEY_ENV = "CXR_JUDGE_API_KEY"

# GREEN's prompt, verbatim from green_score/utils.py::make_prompt (MIT licence, Stanford-AIMI/GREEN): the judge
# models were fine-tuned on exactly this text, including its indentation.
_GREEN_PROMPT = (
    "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference radiology "
    "report composed by expert radiologists.\n\n    Process Overview: You will be presented with:\n\n    1. The "
    "criteria for making a judgment.\n    2. The reference radiology report.\n    3. The candidate radiology "
    "report.\n    4. The desired format for your assessment.\n\n    1. Criteria for Judgment:\n\n    For each "
    "candidate report, determine:\n\n    The count of clinically significant errors.\n    The count of clinically "
    "insignificant errors.\n\n    Errors can fall into one of these categories:\n\n    a) False report of a "
    "finding in the candidate.\n    b) Missing a finding present in the reference.\n    c) Misidentification of "
    "a finding's anatomic location/position.\n    d) Misassessment of the severity of a finding.\n    e) "
    "Mentioning a comparison that isn't in the reference.\n    f) Omitting a comparison detailing a change from "
    "a prior study.\n    Note: Concentrate on the clinical findings rather than the report's writing style. "
    "Evaluate only the findings that appear in both reports.\n\n    2. Reference Report:\n    {reference}\n\n    "
    "3. Candidate Report:\n    {candidate}\n\n    4. Reporting Your Assessment:\n\n    Follow this specific format "
    "for your output, even if no errors are found:\n    ```\n    [Explanation]:\n    <Explanation>\n\n    "
    "[Clinically Significant Errors]:\n    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; "
    "<Error n>\n    ....\n    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n"
    "    [Clinically Insignificant Errors]:\n    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; "
    "...; <Error n>\n    ....\n    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>"
    "\n\n    [Matched Findings]:\n    <The number of matched findings>. <Finding 1>; <Finding 2>; ...; "
    "<Finding n>\n    ```\n"
)


def green_prompt(reference: str, candidate: str, max_words: int = GREEN_MAX_WORDS) -> str:
    """GREEN's judge prompt for one (reference, candidate) pair; each report is cut to ``max_words`` words."""
    reference = " ".join(reference.split()[:max_words])
    candidate = " ".join(candidate.split()[:max_words])
    return _GREEN_PROMPT.replace("{reference}", reference).replace("{candidate}", candidate)


def clean_response(response: str) -> str:
    """GREEN's ``clean_responses``: drop an echoed prompt/chat prefix and end-of-sequence tokens."""
    if "[Explanation]:" in response:
        if "<|assistant|>" in response:
            response = response.split("<|assistant|>")[-1]
        # GREEN tests ``("A" or "B") in response``, which is ``"A" in response``: kept as published
        if "[Explanation]:\n    <Explanation>\n" in response:
            response = response.split("[Explanation]:")[1]
        else:
            response = response.split("[Explanation]:")[-1]
    if "<|assistant|>" in response:
        response = response.split("<|assistant|>")[-1]
    return response.replace("</s>", "").replace("<unk>", "")


def _section(text: str, category: str) -> str | None:
    match = re.search(rf"\[{category}\]:\s*(.*?)(?:\n\s*\n|\Z)", text, re.DOTALL)
    return match.group(1) if match else None


def parse_error_counts(text: str, category: str) -> tuple[int, list[int]]:
    """GREEN's ``parse_error_counts``: ``(total, [count (a) .. count (f)])`` of one section.

    A missing section or one starting with "No" counts 0. Matched findings are the leading ``N.`` of their
    section; error counts are the ``: N.`` after each ``(a)``..``(f)`` line (or ``(1)``..``(6)``).
    """
    if category not in GREEN_CATEGORIES:
        raise ValueError(f"category {category!r} is not one of {GREEN_CATEGORIES}")
    sub_counts = [0] * len(GREEN_SUB_CATEGORIES)
    body = _section(text, category)
    if body is None or body.startswith("No"):
        return 0, sub_counts
    if category == "Matched Findings":
        counts = re.findall(r"^\b\d+\b(?=\.)", body)
        return (int(counts[0]) if counts else 0), sub_counts
    prefixes = [s.split(" ", 1)[0] + " " for s in GREEN_SUB_CATEGORIES]
    matches = sorted(re.findall(r"\([a-f]\) .*", body))
    if not matches:
        matches = sorted(re.findall(r"\([1-6]\) .*", body))
        prefixes = [f"({i}) " for i in range(1, len(GREEN_SUB_CATEGORIES) + 1)]
    for position, prefix in enumerate(prefixes):
        for line in matches:
            if line.startswith(prefix):
                count = re.findall(r"(?<=: )\b\d+\b(?=\.)", line)
                if count:
                    sub_counts[position] = int(count[0])
    return sum(sub_counts), sub_counts


@dataclass(frozen=True)
class GreenResult:
    """GREEN's numbers for one judged pair."""

    score: float
    matched_findings: int
    significant_errors: list[int]
    insignificant_errors: list[int]
    sections_found: bool  # both the significant-error and matched-finding sections were present


def green_from_response(response: str) -> GreenResult:
    """Parse a judge response into GREEN's score and counts (``GREEN.compute_green`` and its counts)."""
    text = clean_response(response)
    _, significant = parse_error_counts(text, GREEN_CATEGORIES[0])
    _, insignificant = parse_error_counts(text, GREEN_CATEGORIES[1])
    matched, _ = parse_error_counts(text, GREEN_CATEGORIES[2])
    score = 0.0 if matched == 0 else matched / (matched + sum(significant))
    found = _section(text, GREEN_CATEGORIES[0]) is not None and _section(text, GREEN_CATEGORIES[2]) is not None
    return GreenResult(score=score, matched_findings=matched, significant_errors=significant,
                       insignificant_errors=insignificant, sections_found=found)


# ---------------------------------------------------------------------------------------------------- client
@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge.

    Args:
        url: the server's base URL (``http://127.0.0.1:8000/v1``) or its full ``.../chat/completions`` URL.
        model: the model name sent in each request.
        workers: requests in flight at most.
        max_retries: retries of a transient failure before the pair is given up (it stays unscored).
        backoff_s: first retry delay; doubles per retry (with up to 25 % jitter), capped at ``max_backoff_s``.
        timeout_s: per-request socket timeout.
        max_tokens: generation budget of the judge's answer.
        api_key_env: environment variable holding a bearer token (optional); sent to the configured host only.
    """

    url: str
    model: str = DEFAULT_JUDGE_MODEL
    workers: int = 4
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 300.0
    max_tokens: int = 1024
    api_key_env: str = API_KEY_ENV

    def endpoint(self) -> str:
        """The ``/chat/completions`` URL."""
        return chat_completions_url(self.url, "judge")


@dataclass(frozen=True)
class JudgePair:
    """One (ground truth, retrieved) report pair; ``pair_id`` is unique within a run (e.g. dataset:study)."""

    pair_id: str
    reference: str
    candidate: str


class JudgeError(LLMRequestError):
    """A judge request failed for good (non-retryable status, refused redirect, retries used up).

    ``fatal`` errors (authentication, wrong URL, refused redirect) stop the run: every pair would fail alike.
    """



class JudgeClient:
    """Sends one GREEN prompt per call to the configured ``/chat/completions`` endpoint, with retries."""

    def __init__(self, config: JudgeConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.endpoint = config.endpoint()
        self._opener = build_opener(self.endpoint, JudgeError, "judge endpoint")
        self._api_key = os.environ.get(config.api_key_env) or None
        self._sleep = sleep
        self._policy = RetryPolicy(config.max_retries, config.backoff_s, config.max_backoff_s, config.timeout_s)

    def _request(self, prompt: str) -> urllib.request.Request:
        body = json.dumps({"model": self.config.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.config.max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")

    def complete(self, prompt: str) -> str:
        """The judge's answer to ``prompt`` (the first choice's message content)."""
        return post_chat(self._opener, lambda: self._request(prompt), self._policy, JudgeError, "judge",
                         self._sleep)


# ----------------------------------------------------------------------------------------------- resumable run
def pair_hash(pair: JudgePair, model: str) -> str:
    """Identifies what was judged: a stored score is reused only for the same reports and judge model."""
    h = hashlib.blake2b(digest_size=16)
    for part in (model, pair.reference, pair.candidate):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def read_results(path: Path) -> dict[str, dict]:
    """Stored records by pair id (the last line of an id wins). Unreadable lines (a run killed mid-write) are
    skipped and counted in a warning; they are judged again."""
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    broken = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                records[str(rec["pair_id"])] = rec
            except (ValueError, KeyError, TypeError):
                broken += 1
    if broken:
        log.warning("%s: %d unreadable lines skipped (their pairs are judged again)", path, broken)
    return records


@dataclass
class JudgeSummary:
    """Outcome of :func:`judge_pairs` over the requested pairs."""

    path: Path
    requested: int
    reused: int = 0
    scored: int = 0
    failed: int = 0
    unparsed: int = 0  # scored answers missing GREEN's sections (they score as GREEN says: 0 matched -> 0)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean GREEN over the pairs that have a score (NaN if none)."""
        return sum(self.scores.values()) / len(self.scores) if self.scores else math.nan


def _judge_one(client: JudgeClient, pair: JudgePair) -> dict:
    response = client.complete(green_prompt(pair.reference, pair.candidate))
    result = green_from_response(response)
    return {"pair_id": pair.pair_id, "input_hash": pair_hash(pair, client.config.model),
            "model": client.config.model, "green": result.score, **{k: v for k, v in asdict(result).items()
                                                                     if k != "score"}, "response": response}


def judge_pairs(pairs: Sequence[JudgePair], config: JudgeConfig, results_path: str | Path,
                client: JudgeClient | None = None, progress: bool = True) -> JudgeSummary:
    """Score ``pairs`` with GREEN through the judge, appending each new score to ``results_path`` (JSONL).

    Pairs whose id already has a line with the same reports and judge model are not sent again. A pair whose
    request fails for good is counted in ``failed`` and left unscored (a rerun retries it); an authentication
    or not-found answer stops the run.
    """
    from tqdm.auto import tqdm

    if config.workers < 1:
        raise ValueError(f"judge workers must be >= 1, got {config.workers}")
    ids = [p.pair_id for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("judge pair ids must be unique")
    path = Path(results_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    client = client or JudgeClient(config)
    stored = read_results(path)
    summary = JudgeSummary(path=path, requested=len(pairs))
    todo = []
    for p in pairs:
        rec = stored.get(p.pair_id)
        if rec is not None and rec.get("input_hash") == pair_hash(p, config.model):
            summary.reused += 1
            summary.scores[p.pair_id] = float(rec["green"])
        else:
            todo.append(p)
    log.info("judge %s: %d pairs, %d already scored in %s, %d to send", config.model, len(pairs), summary.reused,
             path, len(todo))
    end_broken_line(path)
    with open(path, "a", encoding="utf-8") as out, tqdm(total=len(todo), desc="judge", disable=not progress) as bar:
        for pair, fut in bounded_map(lambda p: _judge_one(client, p), todo, config.workers, "judge"):
            bar.update(1)
            try:
                rec = fut.result()
            except JudgeError as err:
                if err.fatal:
                    raise
                summary.failed += 1
                log.warning("judge: pair %s left unscored: %s", pair.pair_id, err)
                continue
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            out.flush()  # one complete line per pair: a killed run loses at most the line being written
            summary.scored += 1
            summary.unparsed += not rec["sections_found"]
            summary.scores[pair.pair_id] = float(rec["green"])
    log.info("judge: %d scored, %d reused, %d failed, %d answers without GREEN sections; mean GREEN %.4f",
             summary.scored, summary.reused, summary.failed, summary.unparsed, summary.mean)
    return summary


def top1_pairs(dataset: str, rows: Iterable) -> list[JudgePair]:
    """Judge pairs (ground truth vs retrieved report) from ``Top1Row``s; ids are ``dataset:query_key`` (with
    ``#n`` for repeated query keys, e.g. several images of one study under the image protocol)."""
    seen: dict[str, int] = {}
    pairs = []
    for row in rows:
        key = f"{dataset}:{row.query_study_key}"
        n = seen.get(key, 0)
        seen[key] = n + 1
        pairs.append(JudgePair(key if n == 0 else f"{key}#{n}", row.ground_truth_report, row.retrieved_report))
    return pairs


def judge_results(results: Sequence, out_dir: str | Path, config: JudgeConfig) -> dict[str, JudgeSummary]:
    """Judge the top-1 dump of each ``DatasetResult`` into ``judge_<dataset>.jsonl`` and add ``GREEN`` (mean)
    and ``GREEN_n`` (pairs scored) to its image→text metrics."""
    summaries = {}
    for r in results:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in r.name)
        summary = judge_pairs(top1_pairs(r.name, r.top1), config, Path(out_dir) / f"judge_{safe}.jsonl")
        r.metrics.setdefault("i2t", {}).update({"GREEN": summary.mean, "GREEN_n": float(len(summary.scores))})
        summaries[r.name] = summary
    return summaries
