"""Online LoRA text path: cached vs online vs online + length bucketing (CLIPAlignModule training steps, same run).

Three cases train on the same epoch of draws (a seeded sampler over synthetic reports with a realistic spread of
lengths):

* ``cached``: frozen text tower, embeddings from the cache (filled once before timing);
* ``online``: the paper's LoRA text tower, batches in the sampler's random order;
* ``bucketed``: the same LoRA module, the same draws regrouped by :class:`cxr.data.bucketing.LengthBucketedSampler`.

Each repeat runs one epoch of steps per case; cases are interleaved and their order rotates between repeats. Per
case: wall time and process CPU time per step (min / median over repeats), the padding fraction of the tokenised
text batches, and ratios of the medians within the run. A step is ``training_step`` + backward + AdamW step.

Usage: python benchmarks/bench_text_bucketing.py [--reports 256] [--batch-size 16] [--repeats 3] [--window 8]
           [--hidden 256 --layers 4 --heads 4] [--device cpu|cuda] [--out docs/bench_text_bucketing.md]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cxr.data.batch import ImageTextBatch
from cxr.data.bucketing import LengthBucketedSampler
from cxr.data.sampling import SeededSampler
from cxr.models.clip_module import CLIPAlignModule
from cxr.models.text.lora import LoraSettings
from cxr.models.text.tiny import RADIOLOGY_SENTENCES, build_tiny_model
from cxr.models.text.tower import TextTower
from cxr.models.vision import VisionTower
from cxr.records import stable_id

CASES = ("cached", "online", "bucketed")


@dataclass
class CaseTimes:
    """Per-step seconds of one case, one entry per repeat."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    padding: float = 0.0


def make_reports(n: int, tokenizer, seed: int, median: int, sigma: float, cap: int) -> tuple[list[str], list[int]]:
    """``n`` distinct reports whose token counts follow a log-normal (MIMIC-like: many short, a long tail)."""
    rng = random.Random(seed)
    pool = [s for s in RADIOLOGY_SENTENCES if not s.startswith(("[", "Retrieve", "0 1"))]
    reports: list[str] = []
    lengths: list[int] = []
    while len(reports) < n:
        target = min(cap, max(12, int(rng.lognormvariate(math.log(median), sigma))))
        sentences: list[str] = []
        text = ""
        while True:
            sentences.append(rng.choice(pool))
            candidate = f"[FINDINGS] {' '.join(sentences)} [IMPRESSION] Case {len(reports)}."
            ntok = len(tokenizer(candidate)["input_ids"])
            if ntok > cap:
                break
            text = candidate
            if ntok >= target:
                break
        if text:
            reports.append(text)
            lengths.append(len(tokenizer(text)["input_ids"]))
    return reports, lengths


def make_batch(texts: list[str], image_size: int, step: int, device: str) -> ImageTextBatch:
    g = torch.Generator().manual_seed(step)
    keys = [f"s{step}-{i}" for i in range(len(texts))]
    return ImageTextBatch(images=torch.randn(len(texts), 1, image_size, image_size, generator=g).to(device),
                          texts=list(texts), study_keys=keys,
                          study_ids=torch.tensor([stable_id(k) for k in keys], device=device),
                          text_ids=torch.tensor([stable_id(t) for t in texts], device=device),
                          sample_index=torch.arange(len(texts), device=device),
                          labels=torch.full((len(texts), 14), -2, dtype=torch.int8, device=device),
                          sources=["bench"] * len(texts))


def build_module(encoder: Path, cache_dir: Path | None, args) -> CLIPAlignModule:
    torch.manual_seed(0)
    lora = None if cache_dir else LoraSettings(r=16, alpha=32, dropout=0.0)
    text = TextTower(str(encoder), use_cache=cache_dir is not None, cache_dir=cache_dir and str(cache_dir),
                     instruction=None, max_length=512, lora=lora, gradient_checkpointing=args.device == "cuda",
                     torch_dtype="bfloat16" if args.device == "cuda" else None)
    vision = VisionTower(args.vision, in_chans=1, image_size=args.image_size)
    module = CLIPAlignModule(vision, text, embed_dim=256, lr=1e-5, layer_decay=1.0)
    module.configure_model()
    module.to(args.device).train()
    return module


def epoch_batches(reports: list[str], lengths: list[int], args, bucketed: bool) -> list[list[str]]:
    base = SeededSampler(len(reports), seed=args.seed)
    sampler = (LengthBucketedSampler(base, lengths, args.batch_size, args.window, seed=args.seed) if bucketed
               else base)
    draws = [k.index for k in sampler]
    n = len(draws) // args.batch_size
    return [[reports[i] for i in draws[b * args.batch_size:(b + 1) * args.batch_size]] for b in range(n)]


def padding(module: CLIPAlignModule, batches: list[list[str]]) -> float:
    """Padded share of the token positions the LoRA encoder actually processes for these batches."""
    enc = module.text.encoder
    total = real = 0
    for texts in batches:
        mask = enc.tokenize(texts).attention_mask
        total += mask.numel()
        real += int(mask.sum())
    return 1.0 - real / total


def run_epoch(module: CLIPAlignModule, opt, batches: list[list[str]], args) -> tuple[float, float]:
    """Per-step wall and process-CPU seconds over one epoch of ``batches``."""
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    sync()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, texts in enumerate(batches):
        batch = make_batch(texts, args.image_size, i, args.device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda"):
            loss = module.training_step(batch, i)
        loss.backward()
        opt.step()
    sync()
    n = len(batches)
    return (time.perf_counter() - wall0) / n, (time.process_time() - cpu0) / n


def run(args) -> tuple[dict[str, CaseTimes], dict]:
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_text_bucketing-"))
    encoder = build_tiny_model("llama", tmp / "llama", hidden_size=args.hidden, layers=args.layers,
                               heads=args.heads, kv_heads=args.kv_heads, intermediate_size=args.intermediate,
                               vocab_size=args.vocab, max_position_embeddings=1024)
    from transformers import AutoTokenizer

    reports, lengths = make_reports(args.reports, AutoTokenizer.from_pretrained(str(encoder)), args.seed,
                                    args.median_tokens, args.sigma, args.max_tokens)
    cached, online = build_module(encoder, tmp / "cache", args), build_module(encoder, None, args)
    t0 = time.perf_counter()
    cached.text.fill_cache(reports, device=args.device)
    fill_s = time.perf_counter() - t0
    mods = {"cached": cached, "online": online, "bucketed": online}
    opts = {"cached": cached.configure_optimizers()["optimizer"]}
    opts["online"] = opts["bucketed"] = online.configure_optimizers()["optimizer"]
    batches = {"cached": epoch_batches(reports, lengths, args, False),
               "online": epoch_batches(reports, lengths, args, False),
               "bucketed": epoch_batches(reports, lengths, args, True)}
    times = {c: CaseTimes(padding=padding(online, batches[c])) for c in CASES}
    run_epoch(online, opts["online"], batches["online"][:2], args)  # warm-up (allocator, kernels)
    run_epoch(cached, opts["cached"], batches["cached"][:2], args)
    for rep in range(args.repeats):
        order = CASES[rep % 3:] + CASES[:rep % 3]
        for case in order:
            wall, cpu = run_epoch(mods[case], opts[case], batches[case], args)
            times[case].wall.append(wall)
            times[case].cpu.append(cpu)
            print(f"repeat {rep} {case:9s} wall {wall * 1e3:7.0f} ms/step  cpu {cpu * 1e3:7.0f} ms/step", flush=True)
    info = {"fill_s": fill_s, "lengths": sorted(lengths), "steps": len(batches["online"]),
            "params_llm": sum(p.numel() for p in online.text.encoder.parameters()),
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}
    return times, info


def table(times: dict[str, CaseTimes], info: dict, args) -> str:
    med = statistics.median
    base = med(times["cached"].wall)
    lines = ["| case | padding | wall ms/step (min / median) | CPU ms/step (min / median) | wall vs cached |",
             "|---|---|---|---|---|"]
    for c in CASES:
        t = times[c]
        pad = "— (LLM not run)" if c == "cached" else f"{100 * t.padding:.1f} %"
        lines.append(f"| {c} | {pad} | {min(t.wall) * 1e3:.0f} / {med(t.wall) * 1e3:.0f} | "
                     f"{min(t.cpu) * 1e3:.0f} / {med(t.cpu) * 1e3:.0f} | ×{med(t.wall) / base:.2f} |")
    per_rep = [b / o for b, o in zip(times["bucketed"].wall, times["online"].wall, strict=True)]
    per_rep_cpu = [b / o for b, o in zip(times["bucketed"].cpu, times["online"].cpu, strict=True)]
    lengths = info["lengths"]
    lines += ["", f"**bucketed / online step time**: ×{med(per_rep):.2f} wall (median of the {args.repeats} "
              f"repeats' ratios; range ×{min(per_rep):.2f}–×{max(per_rep):.2f}), ×{med(per_rep_cpu):.2f} CPU time. "
              f"Padding {100 * times['online'].padding:.1f} % → {100 * times['bucketed'].padding:.1f} %.", "",
              f"Setup: {args.device}; vision `{args.vision}` @ {args.image_size} px; batch {args.batch_size}; "
              f"{info['steps']} steps per case per repeat, {args.repeats} repeats, cases interleaved (order "
              f"rotated); text encoder random Llama ({info['params_llm'] / 1e6:.1f} M params incl. LoRA r16 on "
              f"q,k,v,o: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, vocab {args.vocab}); "
              f"{len(lengths)} reports of {lengths[0]}–{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}, "
              f"log-normal); bucketing window {args.window} batches; cache fill (not in the steps) "
              f"{info['fill_s']:.1f} s; 1-min load average at the end {info['load']:.1f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reports", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--vision", default="resnet18")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--vocab", type=int, default=None)
    ap.add_argument("--median-tokens", type=int, default=90)
    ap.add_argument("--sigma", type=float, default=0.6)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    times, info = run(args)
    text = table(times, info, args)
    print(text)
    if args.out:
        cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        args.out.write_text(f"# Online LoRA text path: cached vs online vs online + length bucketing\n\n{text}\n"
                            f"Command (repository root, `HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false`):\n\n"
                            f"```\n{cmd}\n```\n")


if __name__ == "__main__":
    main()
