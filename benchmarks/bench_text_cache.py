"""CLIPAlignModule training step: frozen-text embedding cache vs online frozen-LLM encoding (same run, ratio).

Both modules are built from the same seed and trained on the same batches in the same process; their steps
alternate (A B, B A, ...) so background load hits both alike. A step is the module's own ``training_step`` +
backward + AdamW step + logit-scale clamp (what Lightning runs per batch, minus data loading). The text path
with the cache (keys + cache lookup + adapter forward/backward) is also timed alone on the same batches, to
give its share of the cached step.

Text encoder: a random-weight tiny Llama (hidden 256, 4 layers, 4 heads,
intermediate 688, vocab 32000; bidirectional, mean pooling) with the paper's per-report instructions.
Reports are composed from radiology sentences to 100-200 tokens. Pixels are random (timing only).

Usage: python benchmarks/bench_text_cache.py [--steps 8] [--warmup 2] [--batch-size 32] [--image-size 128]
                                             [--vision resnet18] [--out docs/bench_text_cache.md]
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from cxr.data.batch import ImageTextBatch
from cxr.models.clip_module import CLIPAlignModule
from cxr.models.text.tiny import RADIOLOGY_SENTENCES, build_tiny_model
from cxr.models.text.tower import TextTower
from cxr.models.vision import VisionTower
from cxr.records import stable_id


@dataclass
class Timings:
    """Per-step wall times in seconds."""

    cached_step: list[float]
    online_step: list[float]
    cached_text: list[float]
    online_text: list[float]


def make_reports(n: int, tokenizer, seed: int, lo: int = 100, hi: int = 200) -> tuple[list[str], list[int]]:
    """``n`` distinct synthetic reports of ``lo``-``hi`` tokens (target length drawn per report)."""
    rng = random.Random(seed)
    pool = [s for s in RADIOLOGY_SENTENCES if not s.startswith(("[", "Retrieve", "0 1"))]
    reports, lengths = [], []
    while len(reports) < n:
        target = rng.randint(lo, hi)
        findings: list[str] = []
        text = ""
        while True:
            findings.append(rng.choice(pool))
            candidate = f"[FINDINGS] {' '.join(findings)} [IMPRESSION] {rng.choice(pool)}"
            ntok = len(tokenizer(candidate)["input_ids"])
            if ntok > hi:
                break
            text = candidate
            if ntok >= target:
                break
        if text and text not in reports:
            reports.append(text)
            lengths.append(len(tokenizer(text)["input_ids"]))
    return reports, lengths


def make_batch(texts: list[str], image_size: int, step: int) -> ImageTextBatch:
    g = torch.Generator().manual_seed(step)
    keys = [f"study{step}-{i}" for i in range(len(texts))]
    return ImageTextBatch(images=torch.randn(len(texts), 1, image_size, image_size, generator=g),
                          texts=list(texts), study_keys=keys,
                          study_ids=torch.tensor([stable_id(k) for k in keys]),
                          text_ids=torch.tensor([stable_id(t) for t in texts]),
                          sample_index=torch.arange(len(texts)),
                          labels=torch.full((len(texts), 14), -2, dtype=torch.int8),
                          sources=["bench"] * len(texts))


def build_module(encoder: Path, cache_dir: Path | None, args) -> CLIPAlignModule:
    torch.manual_seed(0)
    text = TextTower(str(encoder), use_cache=cache_dir is not None, cache_dir=cache_dir and str(cache_dir),
                     instruction="auto", max_length=512)
    vision = VisionTower(args.vision, in_chans=1, image_size=args.image_size)
    module = CLIPAlignModule(vision, text, embed_dim=args.embed_dim, lr=1e-4)
    module.configure_model()  # builds the LLM only when it runs online
    module.train()
    return module


def train_step(module: CLIPAlignModule, opt: torch.optim.Optimizer, batch: ImageTextBatch, i: int) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = module.training_step(batch, i)
    loss.backward()
    opt.step()
    module.on_train_batch_end(loss, batch, i)
    return time.perf_counter() - t0


def text_path(module: CLIPAlignModule, batch: ImageTextBatch) -> float:
    """Text side alone: embeddings (cache lookup or online LLM) + adapter forward and backward."""
    t0 = time.perf_counter()
    emb = module.encode_texts(batch.texts)
    emb.square().mean().backward()
    dt = time.perf_counter() - t0
    module.text_adapter.zero_grad(set_to_none=True)
    return dt


def run(args) -> tuple[Timings, dict]:
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_text_cache-"))
    encoder = build_tiny_model("llama", tmp / "llama", hidden_size=256, layers=4, heads=4, kv_heads=4,
                               intermediate_size=688, vocab_size=32000)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(encoder))
    total = args.warmup + args.steps
    reports, lengths = make_reports(total * args.batch_size, tok, seed=0)
    batches = [make_batch(reports[i * args.batch_size:(i + 1) * args.batch_size], args.image_size, i)
               for i in range(total)]

    cached = build_module(encoder, tmp / "cache", args)
    online = build_module(encoder, None, args)
    t0 = time.perf_counter()
    cached.text.fill_cache(reports)  # what setup() does from datamodule.texts(split)
    fill_s = time.perf_counter() - t0
    assert cached.text.encoder is None, "cached module should not hold the LLM after filling"
    mods = {"cached": cached, "online": online}
    opts = {name: m.configure_optimizers()["optimizer"] for name, m in mods.items()}
    t = Timings([], [], [], [])
    for i, batch in enumerate(batches):
        order = ("cached", "online") if i % 2 == 0 else ("online", "cached")
        step = {name: train_step(mods[name], opts[name], batch, i) for name in order}
        text = {name: text_path(mods[name], batch) for name in order}
        if i >= args.warmup:
            t.cached_step.append(step["cached"])
            t.online_step.append(step["online"])
            t.cached_text.append(text["cached"])
            t.online_text.append(text["online"])
        print(f"step {i}{' (warm-up)' if i < args.warmup else ''}: cached {step['cached'] * 1e3:.0f} ms, "
              f"online {step['online'] * 1e3:.0f} ms, text path cached {text['cached'] * 1e3:.1f} ms",
              flush=True)
    info = {"load_start": load_start, "fill_s": fill_s, "n_reports": len(reports), "tokens": lengths,
            "params_llm": sum(p.numel() for p in online.text.encoder.parameters())}
    return t, info


def table(t: Timings, info: dict, args) -> str:
    med = statistics.median
    step_c, step_o = med(t.cached_step), med(t.online_step)
    text_c, text_o = med(t.cached_text), med(t.online_text)
    toks = sorted(info["tokens"])
    # each pair ran back to back, so a pair's ratio is less exposed to load swings than the medians
    ratios = [o / c for o, c in zip(t.online_step, t.cached_step, strict=False)]
    pair_ratio = med(ratios)
    lines = [
        "| quantity | median | min–max |",
        "|---|---|---|",
        f"| training step, text from cache | {step_c * 1e3:.0f} ms | {min(t.cached_step) * 1e3:.0f}–"
        f"{max(t.cached_step) * 1e3:.0f} ms |",
        f"| training step, frozen LLM online | {step_o * 1e3:.0f} ms | {min(t.online_step) * 1e3:.0f}–"
        f"{max(t.online_step) * 1e3:.0f} ms |",
        f"| **ratio online / cache** (of the medians) | **×{step_o / step_c:.2f}** | |",
        f"| ratio online / cache, median over step pairs | ×{pair_ratio:.2f} | "
        f"×{min(ratios):.2f}–×{max(ratios):.2f} |",
        f"| text path with cache (keys + lookup + adapter fwd/bwd) | {text_c * 1e3:.1f} ms | "
        f"{min(t.cached_text) * 1e3:.1f}–{max(t.cached_text) * 1e3:.1f} ms |",
        f"| **text share of the cached step** | **{100 * text_c / step_c:.2f} %** | |",
        f"| text path online (LLM encode + adapter fwd/bwd) | {text_o * 1e3:.0f} ms | "
        f"{min(t.online_text) * 1e3:.0f}–{max(t.online_text) * 1e3:.0f} ms |",
        f"| one-off cache fill ({info['n_reports']} reports) | {info['fill_s']:.1f} s | "
        f"{1e3 * info['fill_s'] / info['n_reports']:.1f} ms/report |",
    ]
    setup = (f"Setup: vision `{args.vision}` (in_chans 1) @ {args.image_size} px, batch {args.batch_size}, "
             f"embed_dim {args.embed_dim}, fp32, {args.threads} torch threads; text encoder tiny Llama "
             f"({info['params_llm'] / 1e6:.1f} M params: hidden 256, 4 layers, 4 heads, intermediate 688, "
             f"vocab 32000, bidirectional, mean pooling, paper instructions); reports "
             f"{toks[0]}–{toks[-1]} tokens (median {toks[len(toks) // 2]}); {args.warmup} warm-up + "
             f"{args.steps} measured steps per mode, alternating; 1-min load average "
             f"{info['load_start']:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
             f"(other processes share the cores).")
    return "\n".join(lines) + "\n\n" + setup + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--vision", default="resnet18")
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the Markdown table and the command to this file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*self.log.*")
    timings, info = run(args)
    md = table(timings, info, args)
    print()
    print(md)
    if args.out:
        cmd = " ".join(["python", *[shlex.quote(a) for a in sys.argv]])
        Path(args.out).write_text(
            "# Text-embedding cache vs online frozen LLM (CLIPAlignModule training step)\n\n" + md +
            f"\nCommand (from the repository root, env `HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false`):\n\n"
            f"```\n{cmd}\n```\n")


if __name__ == "__main__":
    main()
