"""Command line of ``eval.py``: one checkpoint, several held-out datasets, one results table."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cxr.data.sampling import SamplingUnit
from cxr.labels import UncertainPolicy
from cxr.metrics.ranking import TieRule
from cxr.metrics.retrieval import RetrievalProtocol
from cxr.records import Split

if TYPE_CHECKING:
    from cxr.evaluation.engine import EvalRuntime
    from cxr.evaluation.retrieval_eval import RetrievalEvalOptions

log = logging.getLogger(__name__)


def default_num_workers() -> int:
    """Loader workers for source specs: the CPUs this process may use, at most 8 (image decoding is the
    bottleneck of a GPU evaluation; 0 would decode in the main process)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def parse_ks(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,5,10"`` (or a YAML list) → ``(1, 5, 10)``."""
    if isinstance(text, str):
        return tuple(int(k) for k in text.split(",") if k.strip())
    return tuple(int(k) for k in text)


def build_parser():
    """eval.py's parser: argparse-style flags, plus ``--config FILE.yaml`` holding the same keys (jsonargparse).

    Keys in a config file are the flags' underscore names (``batch_size``, ``zero_shot``); the dashed spellings of
    earlier versions (``--batch-size``) still work on the command line. Later flags override the file.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    p = ArgumentParser(
        prog="eval.py", default_env=False,
        description="Evaluate one checkpoint on several held-out datasets; writes results.{md,csv,json} and a "
                    "top-1 retrieval dump per dataset (report text goes only into those dump files).")
    p.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    p.add_argument("--checkpoint", required=True, help="a train.py checkpoint (.ckpt)")
    p.add_argument("--data", action="append", required=True, metavar="NAME=SPEC.yaml",
                   help="a held-out dataset: YAML with class_path/init_args of a DataModule or a DatasetSource "
                        "(or a train config with a 'data' section); repeat for several datasets (a list in YAML)")
    p.add_argument("--out", required=True, help="output directory")
    _add_metric_arguments(p)
    _add_runtime_arguments(p)
    p.add_argument("--no_dump", "--no-dump", action="store_true",
                   help="do not write the top-1 dumps (which contain text)")
    p.add_argument("--max_batches", "--max-batches", type=int, default=None,
                   help="evaluate only this many batches per dataset (smoke runs)")
    p.add_argument("--zero_shot", "--zero-shot", action="store_true",
                   help="also zero-shot AUROC per observation from '<finding> is present' / 'there is no "
                        "<finding>' prompt pairs (observations with both classes in a dataset only)")
    p.add_argument("--zero_shot_prompts", "--zero-shot-prompts", metavar="YAML", default=None,
                   help="zero-shot AUROC of the classes and prompt templates in this YAML (binary mode; each class's "
                        "label names a CheXpert observation); implies --zero-shot")
    _add_judge_arguments(p)
    return p


def _add_judge_arguments(p) -> None:
    p.add_argument("--judge", metavar="URL", default=None,
                   help="score each top-1 retrieved report against the ground truth with GREEN through this "
                        "OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1); adds a GREEN column and "
                        "writes judge_<dataset>.jsonl (resumable). A bearer token is read from $CXR_JUDGE_API_KEY")
    p.add_argument("--judge_model", "--judge-model", default="StanfordAIMI/GREEN-RadLlama2-7b",
                   help="model name sent to the judge")
    p.add_argument("--judge_workers", "--judge-workers", type=int, default=4,
                   help="judge requests in flight at most")


def _add_metric_arguments(p) -> None:
    p.add_argument("--split", default="test", choices=[s.value for s in Split if s is not Split.TRAIN])
    p.add_argument("--ks", default="1,5,10", help="comma-separated K of Recall@K")
    p.add_argument("--protocol", default="study", choices=[p.value for p in RetrievalProtocol],
                   help="study: one image per study vs one report per study, identical reports correct; image: "
                        "every image vs the study reports; paper: the paper's protocol, every image vs every "
                        "image's report, only its own report correct (image/paper evaluate every image)")
    p.add_argument("--exact_duplicates_only", "--exact-duplicates-only", action="store_true",
                   help="count only the query's own study as correct (default: identical report texts too)")
    p.add_argument("--tie_rule", "--tie-rule", default="pessimistic", choices=[t.value for t in TieRule])
    p.add_argument("--uncertain_policy", "--uncertain-policy", default="zeros",
                   choices=[u.value for u in UncertainPolicy])
    p.add_argument("--exclude_support_devices", "--exclude-support-devices", action="store_true")
    p.add_argument("--chunk_size", "--chunk-size", type=int, default=None,
                   help="edge of the retrieval metric's score tiles (default: 1024 on CPU, 8192 on CUDA)")


def _add_runtime_arguments(p) -> None:
    from cxr.evaluation.engine import DEVICE_CHOICES

    p.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES}; auto = a GPU when present, else the CPU")
    p.add_argument("--devices", default="1",
                   help="number of devices ('auto': all); several need --strategy ddp (one process each)")
    p.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp for several GPUs")
    p.add_argument("--precision", default="32-true",
                   help="Lightning precision: 32-true, bf16-mixed (GPUs since Ampere; CPUs), 16-mixed (GPU)")
    p.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--batch_size", "--batch-size", type=int, default=32, help="eval batch size for source specs")
    p.add_argument("--num_workers", "--num-workers", type=int, default=default_num_workers(),
                   help="loader workers for source specs (default: CPUs available, at most 8)")
    p.add_argument("--image_size", "--image-size", type=int, default=None,
                   help="input size for source specs (default: the checkpoint's vision tower size)")


def _options(args) -> RetrievalEvalOptions:
    from cxr.evaluation.retrieval_eval import RetrievalEvalOptions

    return RetrievalEvalOptions(
        ks=parse_ks(args.ks), protocol=RetrievalProtocol(args.protocol),
        duplicate_texts_correct=not args.exact_duplicates_only, tie_rule=TieRule(args.tie_rule),
        uncertain_policy=UncertainPolicy(args.uncertain_policy),
        exclude_support_devices=args.exclude_support_devices, chunk_size=args.chunk_size,
        split=Split(args.split), max_batches=args.max_batches,
        zero_shot=args.zero_shot or bool(args.zero_shot_prompts), zero_shot_spec=_zero_shot_spec(args.zero_shot_prompts))


def _zero_shot_spec(path: str | None):
    if not path:
        return None
    from cxr.evaluation.zero_shot import ZeroShotMode, load_zero_shot_spec

    spec = load_zero_shot_spec(path)
    if spec.mode is not ZeroShotMode.BINARY:
        raise SystemExit(f"{path}: eval.py scores CheXpert labels, which need mode: binary (use "
                         f"python -m cxr.evaluation.zero_shot_cli --labels for a multi-class label file)")
    return spec


def _runtime(args) -> EvalRuntime:
    from cxr.evaluation.engine import EvalRuntime

    devices = args.devices if args.devices == "auto" else int(args.devices)
    return EvalRuntime(device=args.device, devices=devices, strategy=args.strategy, precision=args.precision,
                       progress_bar=not args.no_progress)


def _datamodules(args, model) -> dict:
    from cxr.evaluation.datasets import EvalDatasetSpec, build_eval_datamodule

    vision = getattr(model, "vision", None)
    unit = _eval_unit(RetrievalProtocol(args.protocol))
    overrides = {"batch_size": args.batch_size, "num_workers": args.num_workers,
                 "image_size": args.image_size or getattr(vision, "image_size", 224),
                 "in_chans": getattr(vision, "in_chans", 1), "eval_unit": unit}
    specs = [EvalDatasetSpec.parse(s) for s in args.data]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SystemExit(f"dataset names must be unique, got {names}")
    datamodules = {s.name: build_eval_datamodule(s, **overrides) for s in specs}
    for name, dm in datamodules.items():  # a DataModule spec (a train config's data) is built as configured
        if hasattr(dm, "eval_unit"):
            dm.eval_unit = unit  # read at setup(): which images the protocol scores
        elif unit is not SamplingUnit.STUDY:
            log.warning("dataset %s: %s has no eval_unit; the %s protocol scores the images it yields", name,
                        type(dm).__name__, args.protocol)
    return datamodules


def _eval_unit(protocol: RetrievalProtocol) -> SamplingUnit:
    """The image and paper protocols score every image of a study; the study protocol one per study."""
    return SamplingUnit.STUDY if protocol is RetrievalProtocol.STUDY else SamplingUnit.IMAGE


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cxr.evaluation.engine import build_eval_trainer, describe_trainer
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model
    from cxr.evaluation.retrieval_eval import evaluate_datasets

    options, runtime = _options(args), _runtime(args)
    trainer = build_eval_trainer(runtime, options.max_batches, root_dir=str(args.out))
    model = prepare_model(load_checkpoint_model(args.checkpoint), "cpu")  # the Trainer moves it
    results = evaluate_datasets(model, _datamodules(args, model), options, trainer=trainer)
    if not trainer.is_global_zero:
        return 0  # every rank computed the same results; one writes them (and asks the judge)
    out = Path(args.out)
    if args.judge:
        from cxr.evaluation.judge import JudgeConfig, judge_results

        judge_results(results, out, JudgeConfig(args.judge, model=args.judge_model, workers=args.judge_workers))
    settings = {"checkpoint": Path(args.checkpoint).name, "split": options.split.value,
                "protocol": options.protocol.value, "eval_unit": _eval_unit(options.protocol).value,
                "duplicate_texts_correct": (options.duplicate_texts_correct
                                            and options.protocol is not RetrievalProtocol.PAPER),
                "tie_rule": options.tie_rule.value, "uncertain_policy": options.uncertain_policy.value,
                "exclude_support_devices": options.exclude_support_devices, "ks": list(options.ks),
                "zero_shot": options.zero_shot,
                "zero_shot_prompts": Path(args.zero_shot_prompts).name if args.zero_shot_prompts else None,
                "judge_model": args.judge_model if args.judge else None,
                "runtime": describe_trainer(trainer)}
    _write_outputs(results, out, settings, dump=not args.no_dump)
    return 0


def _write_outputs(results, out: Path, settings: dict, dump: bool) -> None:
    from cxr.evaluation.tables import (
        markdown_table,
        results_table,
        write_results,
        write_top1_dump,
        zero_shot_table,
    )

    paths = write_results(results, out, settings)
    if dump:
        for r in results:
            write_top1_dump(r, out)
    header, rows = results_table(results)
    sys.stdout.write(markdown_table(header, rows))
    zs_header, zs_rows = zero_shot_table(results)
    if zs_rows:
        sys.stdout.write("\nZero-shot AUROC:\n" + markdown_table(zs_header, zs_rows))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
