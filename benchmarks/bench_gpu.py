"""GPU benchmark at paper shape (LLM2CLIP4CXR: EVA02-L/14 at 448, a Llama-3.2-1B-shaped text encoder, bf16).

Everything is built from configs with random weights (no downloads, no hub): timm ``eva02_large_patch14_clip_336``
at ``img_size=448`` through :class:`cxr.models.vision.VisionTower`, and a random Llama with Llama-3.2-1B's shape
written by :func:`cxr.models.text.tiny.build_tiny_model` and loaded by the project's ``TextEncoder``/``TextTower``.
Sections (each with its own time budget; an error is recorded in the JSON and the next section runs):

- ``vision``: training step (fwd + bwd, bf16 autocast) images/s, peak memory and MFU for batch sizes doubling
  up to OOM, activation checkpointing off/on, ``torch.compile`` off/on (at one batch size);
- ``text_lora``: LoRA (r=16, q/k/v/o) online text step, 256 × 250 tokens, bf16, checkpointing on, and which
  SDPA kernel actually ran (profiler kernel names);
- ``clip_step``: the full ``CLIPAlignModule`` loss step (vision + text + adapter + CLIP loss, fwd + bwd) with the
  text cache vs the LoRA text tower online, and the text share of the online step;
- ``cache_fill``: ``TextTower.fill_cache`` tokens/s (frozen encoder, bf16);
- ``retrieval``: :class:`cxr.metrics.retrieval.ImageTextRetrieval` on N × N × d vs one bare chunked ``torch.mm``;
- ``loader``: 448-px training images/s from the uint8 memmap cache through a DataLoader vs the vision step's.

The JSON is rewritten after every section, so a killed run keeps what finished.

    python benchmarks/bench_gpu.py --out bench_gpu.json [--budget-s 540]
    python benchmarks/bench_gpu.py --dry-run --out /tmp/bench_gpu.json      # CPU, toy sizes (run by the tests)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# Dense bf16 tensor-core peak (FLOP/s) by GPU name, for MFU. Unknown devices get MFU = null.
PEAK_BF16 = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H100": 989e12,
             "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


@dataclass(frozen=True)
class Shape:
    """Sizes of one run: the paper's on a GPU, toy ones for ``--dry-run``."""

    vision_model: str
    image_size: int
    vision_batches: tuple[int, ...]
    compile_batch: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    text_vocab: int
    text_batch: int
    text_tokens: int
    clip_batch: int
    fill_texts: int
    retrieval_n: int
    retrieval_d: int
    loader_images: int
    loader_workers: int


PAPER = Shape("eva02_large_patch14_clip_336", 448, (16, 32, 64, 128, 256), 64, 2048, 16, 32, 8, 8192, 128256,
              256, 250, 64, 4096, 100_000, 1280, 512, 12)
TOY = Shape("eva02_tiny_patch14_224", 28, (2,), 0, 64, 2, 4, 2, 128, 1024, 4, 32, 4, 16, 512, 32, 8, 0)
# Repeats of every timed call: (warm-up, timed); one of each in a dry run, which only checks the code runs.
REPEATS = {"paper": (1, 3), "toy": (0, 1)}


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_BF16.items():
        if key.lower() in name.lower():
            return value
    return None


class Bench:
    """Runs sections under one global budget and rewrites the JSON after each."""

    def __init__(self, out: Path, budget_s: float, device: torch.device) -> None:
        self.out, self.deadline, self.device = out, time.monotonic() + budget_s, device
        self.result: dict = {"sections": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, fn: Callable[[], dict], min_left_s: float) -> None:
        if self.left() < min_left_s:
            self.result["sections"][name] = {"skipped": f"budget: {self.left():.0f} s left < {min_left_s:.0f} s"}
        else:
            print(f"[bench_gpu] {name} ({self.left():.0f} s left)", flush=True)
            t0 = time.perf_counter()
            try:
                self.result["sections"][name] = fn()
            except Exception as exc:  # one failing section must not lose the others
                self.result["sections"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                                 "traceback": traceback.format_exc(limit=6)}
            self.result["sections"][name]["section_s"] = round(time.perf_counter() - t0, 1)
            print(f"[bench_gpu] {name}: {json.dumps(self.result['sections'][name])[:600]}", flush=True)
        self.save()

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.result, indent=2) + "\n")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def timed(step: Callable[[], object], device: torch.device) -> dict:
    """Median and min seconds per call after warm-up calls (CUDA-synchronised); counts from ``REPEATS``."""
    warmup, repeats = REPEATS["paper" if device.type == "cuda" else "toy"]
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)), "repeats": repeats}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def train_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call (forward + backward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------------- vision
def vision_section(shape: Shape, device: torch.device, peak: float | None, budget_s: float) -> dict:
    from cxr.models.vision import VisionTower

    t_end = time.monotonic() + budget_s
    tower = VisionTower(shape.vision_model, image_size=shape.image_size, in_chans=3).to(device)
    params = sum(p.numel() for p in tower.parameters())

    def make_step(model: torch.nn.Module, batch: int) -> Callable[[], None]:
        x = torch.randn(batch, 3, shape.image_size, shape.image_size, device=device)

        def step() -> None:
            with autocast(device):
                loss = model(x).float().square().mean()
            loss.backward()
        return step

    flops_per_image = train_flops(make_step(tower, 1))
    tower.zero_grad(set_to_none=True)
    rows = []
    for ckpt in (False, True):
        tower.backbone.set_grad_checkpointing(ckpt)
        for batch in shape.vision_batches:
            if time.monotonic() > t_end:
                rows.append({"checkpointing": ckpt, "batch": batch, "skipped": "section budget"})
                break
            reset_peak(device)
            try:
                t = timed(make_step(tower, batch), device)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                rows.append({"checkpointing": ckpt, "batch": batch, "oom": True})
                tower.zero_grad(set_to_none=True)
                break
            ips = batch / t["median_s"]
            rows.append({"checkpointing": ckpt, "batch": batch, "images_per_s": round(ips, 1),
                         "peak_mem_gib": peak_gib(device), **t,
                         "mfu": round(ips * flops_per_image / peak, 4) if peak else None})
            tower.zero_grad(set_to_none=True)
    compiled = compile_row(tower, make_step, shape, device, peak, flops_per_image, t_end)
    return {"model": shape.vision_model, "image_size": shape.image_size, "params": params,
            "train_flops_per_image": flops_per_image, "rows": rows, "compile": compiled}


def compile_row(tower, make_step, shape: Shape, device: torch.device, peak: float | None, flops: float,
                t_end: float) -> dict:
    if shape.compile_batch == 0:
        return {"skipped": "compile_batch=0 (dry run: compiling on CPU takes minutes)"}
    if time.monotonic() > t_end - 60:
        return {"skipped": "section budget"}
    tower.backbone.set_grad_checkpointing(False)
    reset_peak(device)
    compiled = torch.compile(tower)
    t0 = time.perf_counter()
    step = make_step(compiled, shape.compile_batch)
    step()
    sync(device)
    compile_s = time.perf_counter() - t0
    t = timed(step, device)
    ips = shape.compile_batch / t["median_s"]
    tower.zero_grad(set_to_none=True)
    return {"batch": shape.compile_batch, "first_call_s": round(compile_s, 1), "images_per_s": round(ips, 1),
            "peak_mem_gib": peak_gib(device), **t, "mfu": round(ips * flops / peak, 4) if peak else None}


# --------------------------------------------------------------------------------------------------------- text
def build_llama(shape: Shape, root: Path) -> Path:
    """A random Llama with the shape (hidden, layers, heads, KV heads, MLP, vocab) of Llama-3.2-1B, on disk."""
    from cxr.models.text.tiny import build_tiny_model

    return build_tiny_model("llama", root / "llama", hidden_size=shape.text_hidden, layers=shape.text_layers,
                            heads=shape.text_heads, kv_heads=shape.text_kv_heads,
                            intermediate_size=shape.text_intermediate, vocab_size=shape.text_vocab,
                            max_position_embeddings=max(512, shape.text_tokens + 8))


def random_tokens(shape: Shape, batch: int, device: torch.device):
    from cxr.models.text.encoder import TokenizedText

    ids = torch.randint(10, shape.text_vocab, (batch, shape.text_tokens), device=device)
    ones = torch.ones_like(ids)
    return TokenizedText(ids, ones, ones)


def sdpa_kernels(fn: Callable[[], object]) -> list[str]:
    """Names of the attention kernels that ran in ``fn`` (flash / memory-efficient / cuDNN / math)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        fn()
    keys = ("flash", "efficient_attention", "cudnn_attention", "_scaled_dot_product", "fmha", "attention")
    names = {e.key for e in prof.key_averages() if any(k in e.key.lower() for k in keys)}
    return sorted(names)


def text_lora_section(shape: Shape, model_dir: Path, device: torch.device, peak: float | None) -> dict:
    from cxr.models.text.encoder import TextEncoder
    from cxr.models.text.lora import LoraSettings
    from cxr.models.text.pooling import PoolingMode

    enc = TextEncoder.from_pretrained(str(model_dir), max_length=shape.text_tokens, pooling=PoolingMode.MEAN,
                                      lora=LoraSettings(), gradient_checkpointing=True,
                                      torch_dtype="bfloat16", attn_implementation="sdpa")
    enc = enc.to(device)
    enc.train()
    feats = random_tokens(shape, shape.text_batch, device)

    def step() -> None:
        with autocast(device):
            loss = enc(feats).float().square().mean()
        loss.backward()

    reset_peak(device)
    t = timed(step, device)
    tokens = shape.text_batch * shape.text_tokens
    try:  # with checkpointing: includes the recomputed forward
        flops = train_flops(step)
    except AssertionError:  # torch's SDPA flop formula rejects grouped-query shapes (32 q heads, 8 KV heads)
        flops = None
    kernels = sdpa_kernels(step)
    trainable = sum(p.numel() for p in enc.parameters() if p.requires_grad)
    return {"batch": shape.text_batch, "tokens_per_text": shape.text_tokens, "tokens_per_s": round(tokens / t["median_s"]),
            "peak_mem_gib": peak_gib(device), **t, "trainable_params": trainable,
            "params": sum(p.numel() for p in enc.parameters()), "step_flops_counted": flops,
            "mfu_counted": round(flops / t["median_s"] / peak, 4) if peak and flops else None, "sdpa_kernels": kernels}


# ---------------------------------------------------------------------------------------------------- clip step
def report_texts(n: int, tokens: int, seed: int = 0) -> list[str]:
    """Distinct report-like texts long enough to be truncated at ``tokens`` (uniform length at paper shape)."""
    from cxr.models.text.tiny import RADIOLOGY_SENTENCES

    rng = np.random.default_rng(seed)
    body = [s for s in RADIOLOGY_SENTENCES if "[" not in s]
    words_needed = tokens  # a BPE token is at most a word here; extra text is truncated
    out = []
    for i in range(n):
        parts, words = [f"Study {i}."], 2
        while words < words_needed:
            s = body[int(rng.integers(len(body)))]
            parts.append(s)
            words += len(s.split())
        out.append(" ".join(parts))
    return out


def clip_module(shape: Shape, model_dir: Path, cache_dir: Path | None, device: torch.device):
    from cxr.models.clip_module import CLIPAlignModule
    from cxr.models.text.lora import LoraSettings
    from cxr.models.text.pooling import PoolingMode
    from cxr.models.text.tower import TextTower
    from cxr.models.vision import VisionTower

    online = cache_dir is None
    text = TextTower(str(model_dir), max_length=shape.text_tokens, pooling=PoolingMode.MEAN,
                     torch_dtype="bfloat16", gradient_checkpointing=online,
                     lora=LoraSettings() if online else None, use_cache=not online,
                     cache_dir=None if online else str(cache_dir), instruction=None,
                     encode_batch_size=shape.text_batch)
    vision = VisionTower(shape.vision_model, image_size=shape.image_size, in_chans=3, grad_checkpointing=True)
    module = CLIPAlignModule(vision, text, embed_dim=1280 if shape is PAPER else 32)
    text.build_encoder()
    return module.to(device)


def clip_batch(shape: Shape, texts: list[str], device: torch.device):
    from cxr.data.batch import ImageTextBatch
    from cxr.records import stable_id

    b = len(texts)
    ids = torch.tensor([stable_id(t) for t in texts], dtype=torch.int64)
    return ImageTextBatch(images=torch.randn(b, 3, shape.image_size, shape.image_size, device=device),
                          texts=texts, study_keys=[str(i) for i in range(b)], study_ids=ids.to(device),
                          text_ids=ids.to(device), sample_index=torch.arange(b, device=device),
                          labels=torch.zeros(b, 14, dtype=torch.int8, device=device), sources=["bench"] * b)


def clip_step_section(shape: Shape, model_dir: Path, work: Path, device: torch.device) -> dict:
    texts = report_texts(shape.clip_batch, shape.text_tokens)
    out = {"batch": shape.clip_batch, "tokens_per_text": shape.text_tokens}
    for variant in ("cached", "online"):
        cache_dir = work / "text_cache" if variant == "cached" else None
        module = clip_module(shape, model_dir, cache_dir, device)
        if cache_dir is not None:
            module.text.fill_cache(texts, device=device)
        batch = clip_batch(shape, texts, device)

        def step(module=module, batch=batch) -> None:
            with autocast(device):
                loss = module._loss(batch).loss
            loss.backward()

        reset_peak(device)
        out[variant] = {**timed(step, device), "peak_mem_gib": peak_gib(device)}
        if variant == "online":
            texts_only = module.text

            def text_step(tower=texts_only) -> None:
                with autocast(device):
                    loss = tower(texts).float().square().mean()
                loss.backward()
            out["online_text_only"] = timed(text_step, device)
        del module
        reset_peak(device)
    out["online_vs_cached"] = round(out["online"]["median_s"] / out["cached"]["median_s"], 3)
    out["text_share_of_online_step"] = round(out["online_text_only"]["median_s"] / out["online"]["median_s"], 3)
    return out


def cache_fill_section(shape: Shape, model_dir: Path, work: Path, device: torch.device) -> dict:
    from cxr.models.text.pooling import PoolingMode
    from cxr.models.text.tower import TextTower

    texts = report_texts(shape.fill_texts, shape.text_tokens, seed=1)
    tower = TextTower(str(model_dir), max_length=shape.text_tokens, pooling=PoolingMode.MEAN,
                      torch_dtype="bfloat16", cache_dir=str(work / "fill_cache"), instruction=None,
                      encode_batch_size=shape.text_batch)
    enc = tower.build_encoder().to(device)
    tokens = sum(int(m.sum()) for m in [enc.tokenize(texts[i:i + 256]).attention_mask
                                       for i in range(0, len(texts), 256)])
    sync(device)
    t0 = time.perf_counter()
    n = tower.fill_cache(texts, device=device)
    sync(device)
    s = time.perf_counter() - t0
    return {"texts": n, "tokens": tokens, "seconds": round(s, 2), "tokens_per_s": round(tokens / s),
            "texts_per_s": round(n / s, 1), "batch_size": shape.text_batch}


# ---------------------------------------------------------------------------------------------------- retrieval
def retrieval_section(shape: Shape, device: torch.device) -> dict:
    from cxr.metrics.retrieval import ImageTextRetrieval

    n, d = shape.retrieval_n, shape.retrieval_d
    g = torch.Generator(device="cpu").manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
    txt = torch.nn.functional.normalize(img.cpu() + 0.5 * torch.randn(n, d, generator=g), dim=1).to(device)
    ids = torch.arange(n, device=device)
    chunk = 8192

    def bare() -> None:
        for i in range(0, n, chunk):
            torch.mm(img[i:i + chunk], txt.T).max(dim=1)  # consume the block so it is not skipped

    def metric() -> None:
        m = ImageTextRetrieval(ks=(1, 5, 10)).to(device)
        m.update(img, txt, ids, ids, ids)
        m.compute()

    reset_peak(device)
    base = timed(bare, device)
    base_peak = peak_gib(device)
    reset_peak(device)
    full = timed(metric, device)
    return {"n": n, "d": d, "bare_chunked_mm": {**base, "peak_mem_gib": base_peak},
            "metric_both_directions": {**full, "peak_mem_gib": peak_gib(device)},
            "ratio_vs_one_mm": round(full["median_s"] / base["median_s"], 3)}


# ------------------------------------------------------------------------------------------------------- loader
def loader_section(shape: Shape, work: Path, vision_ips: float | None) -> dict:
    import cv2

    from cxr.data.image_cache import CachedImageLoader, CacheFormat
    from cxr.data.preprocess import preprocess
    from cxr.data.transforms import build_transform

    src = work / "png"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    side = max(64, int(shape.image_size * 1.15))
    yy, xx = np.mgrid[:side, :side] / side
    base = 0.3 + 0.5 * np.exp(-(((xx - 0.5) / 0.38) ** 4 + ((yy - 0.55) / 0.45) ** 4))
    paths = []
    for i in range(shape.loader_images):
        img = np.clip((base + rng.normal(0, 0.02, base.shape)) * 65535, 0, 65535).astype(np.uint16)
        path = src / f"img{i:05d}.png"
        cv2.imwrite(str(path), img)
        paths.append(path)
    cache = work / "memmap"
    t0 = time.perf_counter()
    preprocess(src, cache, size=shape.image_size, fmt=CacheFormat.NPY_MEMMAP, workers=max(1, os.cpu_count() or 1))
    build_s = time.perf_counter() - t0
    transform = build_transform(True, shape.image_size, in_chans=1)
    loader_fn = CachedImageLoader(str(cache), src_root=str(src), fallback=False)

    class DS(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            return transform(loader_fn(paths[i]))

    dl = torch.utils.data.DataLoader(DS(), batch_size=32, num_workers=shape.loader_workers, shuffle=True,
                                     persistent_workers=False)
    seen = 0
    t0 = time.perf_counter()
    for batch in dl:
        seen += batch.shape[0]
    s = time.perf_counter() - t0
    ips = seen / s
    return {"images": seen, "workers": shape.loader_workers, "image_size": shape.image_size,
            "images_per_s": round(ips, 1), "cache_build_s": round(build_s, 1),
            "vision_step_images_per_s": vision_ips,
            "loader_over_step": round(ips / vision_ips, 2) if vision_ips else None}


# --------------------------------------------------------------------------------------------------------- main
def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device), "cpus": os.cpu_count(), "platform": platform.platform()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_mem_gib=round(props.total_memory / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
    for mod in ("timm", "transformers", "peft", "lightning"):
        with contextlib.suppress(Exception):
            env[mod] = __import__(mod).__version__
    return env


def best_vision_ips(section: dict) -> float | None:
    rows = [r for r in section.get("rows", []) if "images_per_s" in r]
    return max((r["images_per_s"] for r in rows), default=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    parser.add_argument("--budget-s", type=float, default=540.0, help="global wall-clock budget")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on CPU (what the tests run)")
    parser.add_argument("--sections", default="vision,text_lora,clip_step,cache_fill,retrieval,loader")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if not args.dry_run and device.type != "cuda":
        # `make bench` runs every script: on a CPU-only box this one has nothing to measure.
        print("[bench_gpu] no GPU here: nothing measured (use --dry-run for the CPU toy run)", file=sys.stderr)
        return 0
    shape = TOY if args.dry_run else PAPER
    torch.backends.cuda.matmul.allow_tf32 = True
    bench = Bench(args.out, args.budget_s, device)
    env = environment(device)
    bench.result.update(environment=env, shape=asdict(shape), dry_run=args.dry_run,
                        command="python benchmarks/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    peak = peak_flops(env.get("gpu", "")) if device.type == "cuda" else None
    bench.result["peak_bf16_flops"] = peak
    wanted = set(args.sections.split(","))
    sections = bench.result["sections"]
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        work = Path(tmp)
        model_dir: list[Path] = []

        def llama() -> Path:
            if not model_dir:
                model_dir.append(build_llama(shape, work))
            return model_dir[0]

        plan: list[tuple[str, Callable[[], dict], float]] = [
            ("vision", lambda: vision_section(shape, device, peak, min(200.0, bench.left() * 0.4)), 60),
            ("text_lora", lambda: text_lora_section(shape, llama(), device, peak), 60),
            ("clip_step", lambda: clip_step_section(shape, llama(), work, device), 90),
            ("cache_fill", lambda: cache_fill_section(shape, llama(), work, device), 30),
            ("retrieval", lambda: retrieval_section(shape, device), 30),
            ("loader", lambda: loader_section(shape, work, best_vision_ips(sections.get("vision", {}))), 20),
        ]
        for name, fn, min_left in plan:
            if name in wanted:
                bench.run(name, fn, 0 if args.dry_run else min_left)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    bench.result["total_s"] = round(args.budget_s - bench.left(), 1)
    bench.save()
    errors = [k for k, v in sections.items() if "error" in v]
    print(f"[bench_gpu] wrote {args.out}; sections with errors: {errors or 'none'}", flush=True)
    return 1 if errors and args.dry_run else 0


if __name__ == "__main__":
    raise SystemExit(main())
