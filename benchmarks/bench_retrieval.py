"""Retrieval-metric benchmark: the metric (both directions) against ONE bare chunked GEMM, the previous
implementation and torchmetrics; cases interleaved, repeated, timed by CPU time and wall time.

    python benchmarks/bench_retrieval.py --sizes 10000,100000 --dim 512 --repeats 3 --threads 1 \\
        --out docs/bench_retrieval.md

Every (case, N) run is its own subprocess, so its peak memory is its own: ``extra GB`` is the peak resident
set during the timed region minus the resident set just before it (the embeddings and ids are already
there), read from ``/proc/self/status`` after resetting the peak with ``/proc/self/clear_refs``. Repeats
rotate the case order, so a slow phase of a shared machine hits every case. CPU time
(``time.process_time``: all threads of the process) is the robust number on a shared machine; wall time
is reported next to it. Ratios divide medians (and minima) of the same run.

Cases (all on the same seeded data: N images and N reports of N studies, 5% of the studies share one of 20
template reports, so duplicate-text positives exist):

* ``gemm``: the floor: ``image @ textᵀ`` in row chunks of ``--gemm-chunk`` rows into one reused output
  buffer, one direction, nothing else.
* ``metric``: ``ImageTextRetrieval`` (study protocol, duplicate texts correct, pessimistic ties, K=1,5,10):
  both directions and DDP de-duplication; ``compute()`` (without labels nothing reads a top-k: none is kept).
* ``metric_labels``: the same with CheXpert labels: ``compute()`` also keeps the image→text top-10 and
  computes the clinical label agreement from it.
* ``previous``: the implementation before the tiled pass (query-row chunks of 4096 per direction, a
  positive mask per chunk, top-10 in both directions), with ``--previous-max-n`` as its size limit.
* ``torchmetrics``: ``RetrievalHitRate(top_k=5)`` image→text on flattened scores (``--torchmetrics-max-n``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = ("gemm", "metric", "metric_labels", "previous", "torchmetrics")


def _data(n: int, d: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    img = torch.empty(n, d)
    txt = torch.empty(n, d)
    for s in range(0, n, 8192):  # in chunks: no N×D temporaries before the timed region
        e = min(s + 8192, n)
        a = torch.nn.functional.normalize(torch.randn(e - s, d, generator=g), dim=1)
        img[s:e] = a
        noise = 8.0 * torch.randn(e - s, d, generator=g) / d ** 0.5  # cosine to its image ≈ 0.12
        txt[s:e] = torch.nn.functional.normalize(a + noise, dim=1)
    study = torch.arange(n)
    text_ids = study + 1000
    template = torch.rand(n, generator=g) < 0.05
    text_ids[template] = torch.randint(0, 20, (int(template.sum()),), generator=g)
    return img, txt, study, text_ids


def _bad_case(name: str) -> bool:
    raise argparse.ArgumentTypeError(f"unknown case {name!r}; choose from {', '.join(CASES)}")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _run_case(name: str, n: int, d: int, gemm_chunk: int, tile: int | None) -> float:
    import torch

    from cxr.metrics import ImageTextRetrieval
    from cxr.metrics.ranking import positives_from_ids, row_chunk_ranks

    img, txt, study, text_ids = _data(n, d)
    labels = torch.randint(-2, 2, (n, 14), generator=torch.Generator().manual_seed(1)).to(torch.int8)
    _case_start()
    if name == "gemm":
        out = torch.empty(min(gemm_chunk, n), n)
        for s in range(0, n, gemm_chunk):
            e = min(s + gemm_chunk, n)
            torch.mm(img[s:e], txt.t(), out=out[: e - s])
        return float(out[0, 0])
    if name in ("metric", "metric_labels"):
        m = ImageTextRetrieval(ks=(1, 5, 10), chunk_size=tile)
        m.update(img, txt, study, text_ids, study, labels if name == "metric_labels" else None)
        return float(m.compute()["i2t_R@5"])
    if name == "previous":  # both directions as the metric computed them before, top-10 in both
        pos = positives_from_ids((study, study), (text_ids, text_ids))
        r = row_chunk_ranks(img, txt, lambda s, e: pos(s, e), 4096, topk=10).ranks
        row_chunk_ranks(txt, img, lambda s, e: pos(s, e), 4096, topk=10)
        return float(((r >= 0) & (r < 5)).double().mean())
    if name == "torchmetrics":
        from torchmetrics.retrieval import RetrievalHitRate

        scores = (img @ txt.T + 1.0) / 2.0 + 1e-6  # positive scores (torchmetrics >= 1.7.4 drops <= 0)
        target = text_ids[:, None] == text_ids[None, :]  # study ids are unique here: same text = correct
        indexes = torch.arange(n).repeat_interleave(n)
        tm = RetrievalHitRate(top_k=5)
        tm.update(scores.flatten(), target.flatten(), indexes)
        del scores, target, indexes
        return float(tm.compute())
    raise ValueError(name)


_T0: dict[str, float] = {}


def _case_start() -> None:
    _T0.update(rss=_status_kb("VmRSS"), peak_reset=float(_reset_peak()), cpu=time.process_time(),
               wall=time.perf_counter())


def _child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    value = _run_case(args._case, args._n, args.dim, args.gemm_chunk, args.tile)
    cpu, wall = time.process_time() - _T0["cpu"], time.perf_counter() - _T0["wall"]
    peak = _status_kb("VmHWM") if _T0["peak_reset"] else 0
    print(json.dumps({"case": args._case, "n": args._n, "cpu_s": cpu, "wall_s": wall, "value": value,
                      "extra_gb": (peak - _T0["rss"]) / 1024 ** 2 if peak else None,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


def _run_sub(args: argparse.Namespace, name: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--_case", name, "--_n", str(n), "--dim", str(args.dim),
           "--gemm-chunk", str(args.gemm_chunk), "--threads", str(args.threads)]
    if args.tile:
        cmd += ["--tile", str(args.tile)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=True)
    except subprocess.CalledProcessError as err:
        return {"case": name, "n": n, "error": " ".join(err.stderr.strip().splitlines()[-1:])}
    except subprocess.TimeoutExpired:
        return {"case": name, "n": n, "error": f"timeout {args.timeout}s"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    plan = []
    for n in args.sizes:
        for name in args.cases:
            if name == "previous" and n > args.previous_max_n:
                continue
            if name == "torchmetrics" and n > args.torchmetrics_max_n:
                continue
            plan.append((name, n))
    return plan


def _summary(runs: list[dict], plan: list[tuple[str, int]]) -> dict[tuple[str, int], dict]:
    out = {}
    for name, n in plan:
        ok = [r for r in runs if r["case"] == name and r["n"] == n and "cpu_s" in r]
        errors = [r["error"] for r in runs if r["case"] == name and r["n"] == n and "error" in r]
        if not ok:
            out[(name, n)] = {"error": errors[0] if errors else "no run"}
            continue
        cpu, wall = [r["cpu_s"] for r in ok], [r["wall_s"] for r in ok]
        extra = [r["extra_gb"] for r in ok if r["extra_gb"] is not None]
        out[(name, n)] = {"runs": len(ok), "cpu_min": min(cpu), "cpu_med": statistics.median(cpu),
                          "wall_min": min(wall), "wall_med": statistics.median(wall),
                          "extra_gb": max(extra) if extra else None, "value": ok[0]["value"]}
    return out


def _ratio(s: dict, a: tuple[str, int], b: tuple[str, int], key: str) -> str:
    if "cpu_med" not in s.get(a, {}) or "cpu_med" not in s.get(b, {}):
        return "n/a"
    return f"{s[a][key] / s[b][key]:.2f}"


def _table(s: dict, args: argparse.Namespace, threads: int, torch_version: str) -> str:
    lines = ["| case | N | runs | CPU s min / median | wall s min / median | extra GB | i2t R@5 |",
             "|---|---|---|---|---|---|---|"]
    for (name, n), r in s.items():
        if "error" in r:
            lines.append(f"| {name} | {n} | 0 | – | – | – | {r['error']} |")
            continue
        extra = f"{r['extra_gb']:.2f}" if r["extra_gb"] is not None else "n/a"
        value = "" if name == "gemm" else f"{r['value']:.4f}"
        lines.append(f"| {name} | {n} | {r['runs']} | {r['cpu_min']:.2f} / {r['cpu_med']:.2f} | "
                     f"{r['wall_min']:.2f} / {r['wall_med']:.2f} | {extra} | {value} |")
    lines.append("")
    for n in args.sizes:
        pairs = [(("metric", n), ("gemm", n)), (("metric_labels", n), ("gemm", n)),
                 (("previous", n), ("metric_labels", n)), (("torchmetrics", n), ("metric", n))]
        for a, b in pairs:
            if a in s and b in s:
                lines.append(f"- N={n}: {a[0]} / {b[0]}: **{_ratio(s, a, b, 'cpu_med')}×** CPU time "
                             f"(median), {_ratio(s, a, b, 'cpu_min')}× (min); wall "
                             f"{_ratio(s, a, b, 'wall_med')}× (median)")
    lines.append(f"- d={args.dim}, torch {torch_version}, {threads} thread(s), gemm chunk {args.gemm_chunk} "
                 f"rows, metric tile {args.tile or 'default'}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[10000, 100000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--cases", type=lambda v: [c for c in v.split(",") if c in CASES or _bad_case(c)],
                   default=list(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads per case (0: torch's default)")
    p.add_argument("--gemm-chunk", type=int, default=4096)
    p.add_argument("--tile", type=int, default=None, help="metric tile edge (default: the metric's)")
    p.add_argument("--previous-max-n", type=int, default=10000)
    p.add_argument("--torchmetrics-max-n", type=int, default=10000)
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--out", default=None, help="write the Markdown table here")
    p.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._case:
        _child(args)
        return
    plan = _plan(args)
    runs = []
    for rep in range(args.repeats):
        shift = rep % len(plan)
        for name, n in plan[shift:] + plan[:shift]:  # rotated: each case meets every phase of a busy machine
            r = _run_sub(args, name, n)
            runs.append(r)
            print(json.dumps(r), flush=True)
    ok = next((r for r in runs if "threads" in r), {"threads": args.threads, "torch": "?"})
    table = _table(_summary(runs, plan), args, ok["threads"], ok["torch"])
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("# Retrieval metric benchmark\n\nCommand:\n\n```\n" + " ".join(
                ["python", "benchmarks/bench_retrieval.py", *sys.argv[1:]]) + "\n```\n\n" + table)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
