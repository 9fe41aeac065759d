"""Retrieval-metric benchmark: ours vs torchmetrics RetrievalHitRate, and ours vs a bare chunked matmul.

Each case runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own. Results are ratios against a
baseline measured in the same run.

    python benchmarks/bench_retrieval.py --n-small 10000 --n-large 100000 --dim 512 --out docs/bench_retrieval.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _data(n: int, d: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img + 0.9 * torch.randn(n, d, generator=g) / d ** 0.5 * 4, dim=1)
    return img, txt


def _case(name: str, n: int, d: int, chunk: int) -> dict:
    import resource

    import torch
    from torchmetrics.retrieval import RetrievalHitRate

    from cxr.metrics import ImageTextRetrieval
    from cxr.metrics.ranking import positives_from_ids, retrieval_ranks

    img, txt = _data(n, d)
    ids = torch.arange(n)
    t0 = time.perf_counter()  # imports above are outside the timed region
    if name == "ours":
        m = ImageTextRetrieval(ks=(1, 5, 10), chunk_size=chunk)
        m.update(img, txt, ids, ids, ids)
        value = float(m.compute()["i2t_R@5"])
    elif name == "ours_i2t_only":
        r = retrieval_ranks(img, txt, positives_from_ids((ids, ids)), chunk_size=chunk).ranks
        value = float((r < 5).float().mean())
    elif name == "matmul":  # the floor: the chunked score matrix and nothing else
        acc = 0.0
        tt = txt.t().contiguous()
        for s in range(0, n, chunk):
            acc += float((img[s:s + chunk] @ tt)[:, 0].sum())
        value = acc
    elif name == "torchmetrics":
        scores = (img @ txt.T + 1.0) / 2.0 + 1e-6  # positive scores (torchmetrics >= 1.7.4 drops <= 0)
        target = torch.eye(n, dtype=torch.bool)
        indexes = torch.arange(n).repeat_interleave(n)
        tm = RetrievalHitRate(top_k=5)
        tm.update(scores.flatten(), target.flatten(), indexes)
        del scores, target, indexes
        value = float(tm.compute())
    else:
        raise ValueError(name)
    seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return {"case": name, "n": n, "dim": d, "seconds": seconds, "peak_rss_gb": peak_gb, "value": value}


def _run_sub(name: str, n: int, d: int, chunk: int, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--_case", name, "--_n", str(n), "--dim", str(d), "--chunk", str(chunk)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.CalledProcessError as err:
        return {"case": name, "n": n, "dim": d, "error": err.stderr.strip().splitlines()[-1:]}
    except subprocess.TimeoutExpired:
        return {"case": name, "n": n, "dim": d, "error": f"timeout {timeout}s"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _free_gb() -> float:
    with open("/proc/meminfo") as fh:
        info = {line.split(":")[0]: int(line.split()[1]) for line in fh}
    return info.get("MemAvailable", 0) / 1024 ** 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n-small", type=int, default=10000)
    p.add_argument("--n-large", type=int, default=100000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--out", default=None, help="write the Markdown table here")
    p.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._case:
        print(json.dumps(_case(args._case, args._n, args.dim, args.chunk)))
        return
    import torch

    rows = []
    n = args.n_small
    rows.append(_run_sub("ours", n, args.dim, args.chunk, args.timeout))
    # measured for torchmetrics: ≈77 B per (query, candidate) entry (docs/bench_retrieval.md)
    need_gb = 8.1 * (n / 10000) ** 2 + 1
    if need_gb < 0.8 * _free_gb():
        rows.append(_run_sub("torchmetrics", n, args.dim, args.chunk, args.timeout))
    else:
        rows.append({"case": "torchmetrics", "n": n, "dim": args.dim,
                     "error": f"skipped: needs ~{need_gb:.0f} GB, {_free_gb():.0f} GB free"})
    n = args.n_large
    for name in ("matmul", "ours_i2t_only", "ours"):
        rows.append(_run_sub(name, n, args.dim, args.chunk, args.timeout))

    def ratio(a: str, b: str, size: int) -> str:
        ra = next((r for r in rows if r["case"] == a and r["n"] == size and "seconds" in r), None)
        rb = next((r for r in rows if r["case"] == b and r["n"] == size and "seconds" in r), None)
        return f"{ra['seconds'] / rb['seconds']:.2f}" if ra and rb else "n/a"

    lines = ["| case | N×N | d | time (s) | peak RSS (GB) | value | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['n']} | {r['dim']} | – | – | – | {r['error']} |")
        else:
            lines.append(f"| {r['case']} | {r['n']} | {r['dim']} | {r['seconds']:.2f} | {r['peak_rss_gb']:.2f} | "
                         f"{r['value']:.4g} | |")
    lines += ["", f"- torchmetrics / ours at {args.n_small}: **{ratio('torchmetrics', 'ours', args.n_small)}×** time",
              f"- ours (both directions) / bare chunked matmul (one direction) at {args.n_large}: "
              f"**{ratio('ours', 'matmul', args.n_large)}×**; ours i2t only / matmul: "
              f"**{ratio('ours_i2t_only', 'matmul', args.n_large)}×**",
              f"- torch {torch.__version__}, {torch.get_num_threads()} threads, chunk {args.chunk}"]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("# Retrieval metric benchmark\n\nCommand:\n\n```\n" + " ".join(
                ["python", "benchmarks/bench_retrieval.py", *sys.argv[1:]]) + "\n```\n\n" + table)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
