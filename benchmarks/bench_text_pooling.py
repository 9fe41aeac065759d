"""Latent-attention pooling: batched masked version vs the authors' per-sample Python loop (same run, ratio).

Usage: python benchmarks/bench_text_pooling.py [--d-model 512] [--batch 32] [--max-len 128] [--reps 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from cxr.models.text.pooling import LatentAttentionPooling


def per_sample(head: LatentAttentionPooling, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The authors' reference: slice each row's valid tokens, attend to the latents, MLP, mean."""
    lat = head.latents.unsqueeze(0)
    outs = []
    for i in range(hidden.shape[0]):
        tokens = hidden[i][mask[i].bool()].unsqueeze(0)
        out, _ = head.multihead_attn(tokens, lat, lat, need_weights=False)
        outs.append(head.mlp(out).mean(1)[0])
    return torch.stack(outs)


def best_of(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--latents", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    head = LatentAttentionPooling(args.d_model, args.latents, args.heads).eval()
    hidden = torch.randn(args.batch, args.max_len, args.d_model)
    lengths = torch.randint(args.max_len // 4, args.max_len + 1, (args.batch,))
    mask = (torch.arange(args.max_len).flip(0).unsqueeze(0) < lengths.unsqueeze(1)).long()  # left padding
    with torch.no_grad():
        diff = float((head(hidden, mask) - per_sample(head, hidden, mask)).abs().max())
        t_loop = best_of(lambda: per_sample(head, hidden, mask), args.reps)
        t_batch = best_of(lambda: head(hidden, mask), args.reps)
    print(f"threads={torch.get_num_threads()} d={args.d_model} latents={args.latents} heads={args.heads} "
          f"batch={args.batch} max_len={args.max_len} mean_len={lengths.float().mean():.1f}")
    print(f"per-sample loop: {t_loop * 1e3:.1f} ms | batched: {t_batch * 1e3:.1f} ms | "
          f"speed-up x{t_loop / t_batch:.2f} | max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
