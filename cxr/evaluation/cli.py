"""Command line of ``eval.py``: one checkpoint, several held-out datasets, one results table."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cxr.data.records import Split
from cxr.labels import UncertainPolicy
from cxr.metrics.ranking import TieRule
from cxr.metrics.retrieval import RetrievalProtocol

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval.py",
        description="Evaluate one checkpoint on several held-out datasets; writes results.{md,csv,json} and a "
                    "top-1 retrieval dump per dataset (report text goes only into those dump files).")
    p.add_argument("--checkpoint", required=True, help="a train.py checkpoint (.ckpt)")
    p.add_argument("--data", action="append", required=True, metavar="NAME=SPEC.yaml",
                   help="a held-out dataset: YAML with class_path/init_args of a DataModule or a DatasetSource "
                        "(or a train config with a 'data' section); repeat for several datasets")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test", choices=[s.value for s in Split if s is not Split.TRAIN])
    p.add_argument("--ks", default="1,5,10", help="comma-separated K of Recall@K")
    p.add_argument("--protocol", default="study", choices=[p.value for p in RetrievalProtocol])
    p.add_argument("--exact-duplicates-only", action="store_true",
                   help="count only the query's own study as correct (default: identical report texts too)")
    p.add_argument("--tie-rule", default="pessimistic", choices=[t.value for t in TieRule])
    p.add_argument("--uncertain-policy", default="zeros", choices=[u.value for u in UncertainPolicy])
    p.add_argument("--exclude-support-devices", action="store_true")
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32, help="eval batch size for source specs")
    p.add_argument("--num-workers", type=int, default=0, help="loader workers for source specs")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size for source specs (default: the checkpoint's vision tower size)")
    p.add_argument("--no-dump", action="store_true", help="do not write the top-1 dumps (which contain text)")
    p.add_argument("--max-batches", type=int, default=None, help="evaluate only this many batches (smoke runs)")
    p.add_argument("--zero-shot", action="store_true",
                   help="also zero-shot AUROC per observation from '<finding> is present' / 'there is no "
                        "<finding>' prompt pairs (observations with both classes in a dataset only)")
    p.add_argument("--judge", metavar="URL", default=None,
                   help="score each top-1 retrieved report against the ground truth with GREEN through this "
                        "OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1); adds a GREEN column and "
                        "writes judge_<dataset>.jsonl (resumable). A bearer token is read from $CXR_JUDGE_API_KEY")
    p.add_argument("--judge-model", default="StanfordAIMI/GREEN-RadLlama2-7b", help="model name sent to the judge")
    p.add_argument("--judge-workers", type=int, default=4, help="judge requests in flight at most")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cxr.evaluation.datasets import EvalDatasetSpec, build_eval_datamodule
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model
    from cxr.evaluation.retrieval_eval import RetrievalEvalOptions, evaluate_datasets
    from cxr.evaluation.tables import (markdown_table, results_table, write_results, write_top1_dump,
                                       zero_shot_table)

    options = RetrievalEvalOptions(
        ks=tuple(int(k) for k in args.ks.split(",") if k.strip()), protocol=RetrievalProtocol(args.protocol),
        duplicate_texts_correct=not args.exact_duplicates_only, tie_rule=TieRule(args.tie_rule),
        uncertain_policy=UncertainPolicy(args.uncertain_policy),
        exclude_support_devices=args.exclude_support_devices, chunk_size=args.chunk_size,
        split=Split(args.split), max_batches=args.max_batches, zero_shot=args.zero_shot)
    model = prepare_model(load_checkpoint_model(args.checkpoint), args.device)
    vision = getattr(model, "vision", None)
    overrides = {"batch_size": args.batch_size, "num_workers": args.num_workers,
                 "image_size": args.image_size or getattr(vision, "image_size", 224),
                 "in_chans": getattr(vision, "in_chans", 1)}
    specs = [EvalDatasetSpec.parse(s) for s in args.data]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SystemExit(f"dataset names must be unique, got {names}")
    datamodules = {s.name: build_eval_datamodule(s, **overrides) for s in specs}
    results = evaluate_datasets(model, datamodules, options)
    out = Path(args.out)
    if args.judge:
        from cxr.evaluation.judge import JudgeConfig, judge_results

        judge_results(results, out, JudgeConfig(args.judge, model=args.judge_model, workers=args.judge_workers))
    settings = {"checkpoint": Path(args.checkpoint).name, "split": options.split.value,
                "protocol": options.protocol.value, "duplicate_texts_correct": options.duplicate_texts_correct,
                "tie_rule": options.tie_rule.value, "uncertain_policy": options.uncertain_policy.value,
                "exclude_support_devices": options.exclude_support_devices, "ks": list(options.ks),
                "zero_shot": options.zero_shot, "judge_model": args.judge_model if args.judge else None}
    paths = write_results(results, out, settings)
    if not args.no_dump:
        for r in results:
            write_top1_dump(r, out)
    header, rows = results_table(results)
    sys.stdout.write(markdown_table(header, rows))
    zs_header, zs_rows = zero_shot_table(results)
    if zs_rows:
        sys.stdout.write("\nZero-shot AUROC:\n" + markdown_table(zs_header, zs_rows))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0
