"""Linear probe: frozen vision features → one logistic regression per CheXpert observation, AUROC on the test split.

    python -m cxr.evaluation.linear_probe --checkpoint CKPT --data synthetic=configs/demo.yaml --out probe
    python -m cxr.evaluation.linear_probe --checkpoint CKPT --data synthetic=configs/demo.yaml --untrained ...

Features are the vision tower's pooled output (``backbone``, before the projection; cxr-clip's probe) or the
joint-space image embedding (``projected``), extracted once per split with the deterministic eval transform
(one frontal image per study, the train split included). They are standardised with the train statistics; the
regression (full-batch L-BFGS on the binary cross-entropy + ``l2``·‖W‖²/2, torch) is fitted on the train split
for each ``l2`` of the grid; the one with the best mean validation AUROC is reported on the test split.
``--untrained`` probes a randomly initialised copy of the same vision tower: the baseline that shows what
image–text training added. Labels: NOT_MENTIONED is negative, UNCERTAIN follows ``--uncertain-policy``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import torch

from cxr.labels import CHEXPERT_OBSERVATIONS, UncertainPolicy, binarize

log = logging.getLogger(__name__)

DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class ProbeFeatures(str, Enum):
    """Which frozen image representation the probe reads."""

    BACKBONE = "backbone"
    PROJECTED = "projected"


@dataclass
class SplitFeatures:
    """Features ``(N, D)`` and four-state labels ``(N, 14)`` of one split."""

    features: torch.Tensor
    labels: torch.Tensor


def eval_mode_loader(dm, split, batch_size: int | None = None):
    """A deterministic loader of ``split`` of a ``CXRDataModule`` with the eval transform, the train split
    included (its own train loader augments and samples randomly)."""
    from torch.utils.data import DataLoader, SequentialSampler

    from cxr.data.dataset import ImageTextDataset, build_items, collate_samples

    if not hasattr(dm, "load_records") or not hasattr(dm, "transform"):
        raise TypeError(f"the linear probe needs a CXRDataModule (train/val/test studies), got {type(dm).__name__}")
    records = dm.load_records()[split]
    items, _ = build_items(records, False, dm.view_policy, dm.sampling, dm.keep_lateral_only)
    dataset = ImageTextDataset(records, items, dm.image_loader, dm.transform.build(train=False),
                               tagged_sections=dm.tagged_sections, shuffle_prob=0.0)
    return DataLoader(dataset, batch_size=batch_size or dm.eval_batch_size, sampler=SequentialSampler(dataset),
                      num_workers=dm.num_workers, collate_fn=collate_samples)


@torch.no_grad()
def extract_features(model, loader, features: ProbeFeatures = ProbeFeatures.BACKBONE,
                     desc: str = "features") -> SplitFeatures:
    """Frozen image features and labels over ``loader`` (``ImageTextBatch``es); the model stays in eval mode."""
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc):
        images = batch.images.to(device)
        out = model.vision(images) if features is ProbeFeatures.BACKBONE else model.encode_images(images)
        feats.append(out.float().cpu())
        labels.append(batch.labels.cpu())
    if not feats:
        raise ValueError(f"{desc}: the split has no images")
    return SplitFeatures(torch.cat(feats), torch.cat(labels))


def fit_logistic(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, l2: float,
                 max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-output logistic regression: ``(D, C)`` weights and ``(C,)`` biases minimising, per column, the mean
    BCE over its ``valid`` rows plus ``l2/2·‖w‖²`` (columns are independent: their losses only add up)."""
    x, y, m = x.double(), y.double(), valid.double()
    counts = m.sum(0).clamp(min=1)
    w = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")
        loss = ((bce * m).sum(0) / counts).sum() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def observation_aurocs(scores: torch.Tensor, y: torch.Tensor, valid: torch.Tensor,
                       observations: Sequence[str]) -> dict[str, float]:
    """AUROC per observation (NaN without both classes among the valid rows) and their ``mean``."""
    from torchmetrics.functional.classification import binary_auroc

    out = {}
    for c, obs in enumerate(observations):
        keep = valid[:, c]
        t = y[keep, c].long()
        out[obs] = float(binary_auroc(scores[keep, c].float(), t)) if 0 < int(t.sum()) < t.numel() else math.nan
    finite = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = sum(finite) / len(finite) if finite else math.nan
    return out


@dataclass
class ProbeResult:
    """Test AUROC per observation (+ ``mean``), the chosen ``l2`` and the validation means of the grid."""

    test_auroc: dict[str, float]
    l2: float
    val_mean_auroc: dict[str, float]
    observations: list[str]
    num_train: int
    feature_dim: int


def _both_classes(y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    pos = (y.bool() & valid).sum(0)
    neg = (~y.bool() & valid).sum(0)
    return (pos > 0) & (neg > 0)


def run_probe(train: SplitFeatures, val: SplitFeatures | None, test: SplitFeatures,
              l2_grid: Sequence[float] = DEFAULT_L2_GRID,
              policy: UncertainPolicy | str = UncertainPolicy.ZEROS) -> ProbeResult:
    """Fit on ``train`` for each ``l2``, pick the best mean ``val`` AUROC (the middle of the grid without a val
    split), report ``test`` AUROC for the observations with both classes in train and test."""
    (ytr, vtr), (yte, vte) = binarize(train.labels, policy), binarize(test.labels, policy)
    keep = _both_classes(ytr, vtr) & _both_classes(yte, vte)
    obs = [o for o, k in zip(CHEXPERT_OBSERVATIONS, keep.tolist(), strict=True) if k]
    if not obs:
        raise ValueError("no observation has both classes in the train and test splits")
    idx = keep.nonzero().flatten()
    mean, std = train.features.mean(0), train.features.std(0).clamp(min=1e-6)

    def standard(f: SplitFeatures) -> torch.Tensor:
        return ((f.features - mean) / std).double()

    xtr, xte = standard(train), standard(test)
    fits = {l2: fit_logistic(xtr, ytr[:, idx], vtr[:, idx], l2) for l2 in l2_grid}
    val_means: dict[str, float] = {}
    if val is not None and len(val.features):
        yva, vva = binarize(val.labels, policy)
        xva = standard(val)
        for l2, (w, b) in fits.items():
            val_means[str(l2)] = observation_aurocs(xva @ w + b, yva[:, idx], vva[:, idx], obs)["mean"]
    usable = {float(k): v for k, v in val_means.items() if not math.isnan(v)}
    best = max(usable, key=usable.get) if usable else sorted(l2_grid)[len(l2_grid) // 2]
    w, b = fits[best]
    test_auroc = observation_aurocs(xte @ w + b, yte[:, idx], vte[:, idx], obs)
    return ProbeResult(test_auroc=test_auroc, l2=best, val_mean_auroc=val_means, observations=obs,
                       num_train=int(xtr.shape[0]), feature_dim=int(xtr.shape[1]))


def untrained_copy(model):
    """The model with its vision tower replaced by a randomly initialised one of the same architecture."""
    from cxr.models.vision import VisionTower

    vision = model.vision
    torch.manual_seed(0)
    model.vision = VisionTower(vision.model_name, in_chans=vision.in_chans, image_size=vision.image_size,
                               model_kwargs=getattr(vision, "model_kwargs", None)).to(
        next(vision.parameters()).device)
    return model.eval()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cxr.evaluation.linear_probe", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a train.py checkpoint of a dual-tower module")
    p.add_argument("--data", required=True, metavar="NAME=SPEC.yaml",
                   help="a CXRDataModule spec with train/val/test studies and CheXpert labels (eval.py format)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--untrained", action="store_true", help="probe a randomly initialised vision tower instead")
    p.add_argument("--features", default="backbone", choices=[f.value for f in ProbeFeatures])
    p.add_argument("--l2", default=",".join(str(v) for v in DEFAULT_L2_GRID), help="comma-separated L2 grid")
    p.add_argument("--uncertain-policy", default="zeros", choices=[u.value for u in UncertainPolicy])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cxr.evaluation.datasets import EvalDatasetSpec, build_eval_datamodule
    from cxr.evaluation.model_loading import load_checkpoint_model
    from cxr.evaluation.tables import markdown_table
    from cxr.records import Split

    model = load_checkpoint_model(args.checkpoint).to(args.device).eval()
    if args.untrained:
        model = untrained_copy(model)
    vision = model.vision
    dm = build_eval_datamodule(EvalDatasetSpec.parse(args.data), image_size=vision.image_size,
                               in_chans=vision.in_chans)
    feats = ProbeFeatures(args.features)
    splits = {s: extract_features(model, eval_mode_loader(dm, s, args.batch_size), feats, desc=s.value)
              for s in (Split.TRAIN, Split.VAL, Split.TEST) if dm.load_records()[s]}
    if Split.TRAIN not in splits or Split.TEST not in splits:
        raise SystemExit(f"{args.data}: the linear probe needs train and test studies")
    result = run_probe(splits[Split.TRAIN], splits.get(Split.VAL), splits[Split.TEST],
                       [float(v) for v in args.l2.split(",") if v.strip()], args.uncertain_policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"checkpoint": Path(args.checkpoint).name, "untrained": args.untrained, "features": feats.value,
                "uncertain_policy": args.uncertain_policy, "splits": {s.value: len(f.features)
                                                                       for s, f in splits.items()}}
    (out / "linear_probe.json").write_text(json.dumps({"settings": settings, **asdict(result)}, indent=2))
    rows = [[k, v] for k, v in result.test_auroc.items()]
    table = markdown_table(["observation", "test AUROC"], rows)
    (out / "linear_probe.md").write_text(table + f"\nl2={result.l2}, settings: {settings}\n", encoding="utf-8")
    sys.stdout.write(table)
    log.info("linear probe (%s, l2=%g): mean test AUROC %.4f over %d observations", feats.value, result.l2,
             result.test_auroc["mean"], len(result.observations))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
