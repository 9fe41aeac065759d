"""``python -m cxr.evaluation.zero_shot_cli``: zero-shot classification with user classes and prompt templates.

    python -m cxr.evaluation.zero_shot_cli --checkpoint CKPT --prompts classes.yaml --labels rsna.csv \
        --image-root /data/rsna/images --out zs_out
    python -m cxr.evaluation.zero_shot_cli --checkpoint CKPT --prompts chexpert5.yaml \
        --data mimic=configs/data/mimic_cxr_jpg.yaml --split test --out zs_out

Writes ``zero_shot.md``, ``zero_shot.csv`` and ``zero_shot.json``: AUROC, AUPRC, accuracy and F1 per class and
their macro mean (``top1_accuracy`` too in multi-class mode). No image, report or prompt text is logged.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from cxr.data.transforms import EvalResize, TransformConfig
    from cxr.labels import UncertainPolicy

    defaults = TransformConfig()
    p = argparse.ArgumentParser(prog="python -m cxr.evaluation.zero_shot_cli", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a train.py checkpoint (.ckpt) of a dual-tower module")
    p.add_argument("--prompts", required=True, help="zero-shot YAML: mode, templates, classes")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", help="label CSV: an image-path column and the label column(s)")
    src.add_argument("--data", metavar="NAME=SPEC.yaml", help="an eval.py dataset spec (CheXpert labels)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--image-root", default=None, help="root of relative image paths (default: the CSV's folder)")
    p.add_argument("--image-column", default=None, help="image-path column of the label CSV (default: detected)")
    p.add_argument("--split", default="test", choices=["val", "test"], help="split of a --data spec")
    p.add_argument("--uncertain-policy", default="zeros", choices=[u.value for u in UncertainPolicy])
    p.add_argument("--mean", type=float, nargs="+", default=None,
                   help=f"normalisation mean of the label-CSV images (default {defaults.mean}: the DataModule's)")
    p.add_argument("--std", type=float, nargs="+", default=None, help=f"normalisation std (default {defaults.std})")
    p.add_argument("--eval-resize", default=defaults.eval_resize.value, choices=[e.value for e in EvalResize])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


@torch.no_grad()
def embed_image_files(model, paths: Sequence[Path], transform, batch_size: int, num_workers: int) -> torch.Tensor:
    """``model.encode_images`` over image files (eval transform), float32 on the CPU."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from cxr.evaluation.label_files import ImageFileDataset

    loader = DataLoader(ImageFileDataset(list(paths), transform), batch_size=batch_size, num_workers=num_workers)
    out = [model.encode_images(x.to(model.device)).float().cpu() for x in tqdm(loader, desc="images")]
    return torch.cat(out)


@torch.no_grad()
def embed_split(model, dm, split) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embeddings and four-state labels of a DataModule's val/test split (one image per study)."""
    from tqdm.auto import tqdm

    from cxr.evaluation.retrieval_eval import _loader

    images, labels = [], []
    for batch in tqdm(_loader(dm, split), desc="images"):
        images.append(model.encode_images(batch.images.to(model.device)).float().cpu())
        labels.append(batch.labels.cpu())
    if not images:
        raise ValueError(f"the {split.value} split yielded no images")
    return torch.cat(images), torch.cat(labels)


def write_zero_shot(metrics: dict[str, dict[str, float]], out_dir: Path, settings: dict) -> dict[str, Path]:
    """``zero_shot.{md,csv,json}``: one row per class, then ``mean``."""
    from cxr.evaluation.tables import markdown_table

    out_dir.mkdir(parents=True, exist_ok=True)
    cols: dict[str, None] = {}
    for values in metrics.values():
        cols.update(dict.fromkeys(values))
    header = ["class", *cols]
    rows = [[name, *[values.get(c, "") for c in cols]] for name, values in metrics.items()]
    paths = {k: out_dir / f"zero_shot.{k}" for k in ("md", "csv", "json")}
    paths["md"].write_text(markdown_table(header, rows) + "\nSettings: "
                           + ", ".join(f"{k}={v}" for k, v in settings.items()) + "\n", encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    paths["json"].write_text(json.dumps({"settings": settings, "metrics": metrics}, indent=2), encoding="utf-8")
    return paths


def _images_and_targets(args, model, spec):
    from cxr.data.transforms import EvalResize, TransformConfig
    from cxr.evaluation.datasets import EvalDatasetSpec, build_eval_datamodule
    from cxr.evaluation.label_files import read_label_file
    from cxr.evaluation.zero_shot import chexpert_targets
    from cxr.records import Split

    vision = getattr(model, "vision", None)
    size, chans = getattr(vision, "image_size", 224), getattr(vision, "in_chans", 1)
    if args.labels:
        lf = read_label_file(args.labels, spec, args.image_root, args.image_column, args.uncertain_policy)
        base = TransformConfig()
        mean = tuple(args.mean) if args.mean else base.mean
        std = tuple(args.std) if args.std else base.std
        transform = TransformConfig(image_size=size, in_chans=chans, mean=mean, std=std,
                                    eval_resize=EvalResize(args.eval_resize)).build(train=False)
        emb = embed_image_files(model, lf.paths, transform, args.batch_size, args.num_workers)
        return emb, lf.targets, lf.valid
    dm = build_eval_datamodule(EvalDatasetSpec.parse(args.data), batch_size=args.batch_size,
                               num_workers=args.num_workers, image_size=size, in_chans=chans)
    emb, labels = embed_split(model, dm, Split(args.split))
    targets, valid = chexpert_targets(labels, spec, args.uncertain_policy)
    return emb, targets, valid


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cxr.evaluation.model_loading import load_checkpoint_model, prepare_model
    from cxr.evaluation.tables import markdown_table
    from cxr.evaluation.zero_shot import encode_prompts, evaluate_spec, load_zero_shot_spec

    spec = load_zero_shot_spec(args.prompts)
    model = prepare_model(load_checkpoint_model(args.checkpoint), args.device)
    normalize = bool(getattr(getattr(model, "loss_config", None), "normalize", True))
    emb, targets, valid = _images_and_targets(args, model, spec)
    log.info("zero-shot %s: %d images, %d classes", spec.mode.value, emb.shape[0], len(spec.classes))
    metrics = evaluate_spec(lambda t: encode_prompts(model, t), emb, targets, spec, valid, normalize)
    settings = {"checkpoint": Path(args.checkpoint).name, "mode": spec.mode.value, "scale": spec.scale,
                "labels": Path(args.labels).name if args.labels else args.data, "images": int(emb.shape[0]),
                "uncertain_policy": args.uncertain_policy, "similarity": "cosine" if normalize else "dot"}
    paths = write_zero_shot(metrics, Path(args.out), settings)
    header = ["class", "auroc", "auprc", "accuracy", "f1"]
    sys.stdout.write(markdown_table(header, [[k, *[v.get(c, "") for c in header[1:]]] for k, v in metrics.items()]))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
