"""Loading throughput: full-size DICOM vs the preprocessing cache, measured in one run.

Writes ``--num`` synthetic 2048×2048 12-bit MONOCHROME1 DICOMs (a fraction JPEG 2000 lossless),
then times, single process, ``load + eval transform to 224`` per image from (a) the DICOMs and
(b) the caches built by :mod:`cxr.data.preprocess` (PNG tree and uint8 memmap). Files are read
warm (just written), so the numbers compare decode + resize work, not disk speed.

    python benchmarks/bench_loading.py [--num 48] [--write-md docs/bench_loading.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydicom.uid import JPEG2000Lossless  # noqa: E402

from cxr.data.dicom import write_dicom  # noqa: E402
from cxr.data.image_cache import CachedImageLoader, CacheFormat  # noqa: E402
from cxr.data.images import load_image  # noqa: E402
from cxr.data.preprocess import preprocess  # noqa: E402
from cxr.data.transforms import build_transform  # noqa: E402


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float
    images: int

    @property
    def per_second(self) -> float:
        return self.images / self.seconds


def synthetic_radiograph(size: int, seed: int) -> np.ndarray:
    """Smooth chest-like 12-bit phantom with noise (so compression has real work to do)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    body = np.exp(-(((xx - 0.5) / 0.38) ** 4 + ((yy - 0.55) / 0.45) ** 4))
    lungs = sum(np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.25) ** 2)) for cx in (0.32, 0.68))
    img = 0.15 + 0.6 * body - 0.35 * lungs + rng.normal(0, 0.01, (size, size))
    return np.clip(img * 4095, 0, 4095).astype(np.uint16)


def write_dataset(root: Path, num: int, size: int, j2k_every: int) -> list[Path]:
    paths = []
    for i in range(num):
        path = root / f"p{i % 4}" / f"img{i:03d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        syntax = JPEG2000Lossless if j2k_every and i % j2k_every == 0 else None
        write_dicom(path, synthetic_radiograph(size, i), photometric="MONOCHROME1", bits_stored=12,
                    transfer_syntax=syntax, WindowCenter=2048.0, WindowWidth=4096.0)
        paths.append(path)
    return paths


def time_pass(name: str, paths: Sequence[Path], load: Callable[[Path], np.ndarray], repeats: int) -> Row:
    transform = build_transform(False, 224)
    transform(load(paths[0]))  # warm-up (imports, OpenCV/albumentations first-call costs)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            out = transform(load(path))
        best = min(best, time.perf_counter() - start)
    assert out.shape == (1, 224, 224)
    return Row(name, best, len(paths))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=48)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--j2k-every", type=int, default=4, help="every k-th file is JPEG 2000 (0: none)")
    parser.add_argument("--cache-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per pipeline; the best is kept")
    parser.add_argument("--write-md", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # single process, single thread: a per-DataLoader-worker figure

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = write_dataset(root / "dicom", args.num, args.size, args.j2k_every)
        gen_s = time.perf_counter() - t0
        rows = [time_pass("DICOM full size (decode + VOI + invert) → eval 224", paths, load_image, args.repeats)]
        native = [p for i, p in enumerate(paths) if not (args.j2k_every and i % args.j2k_every == 0)]
        j2k = [p for p in paths if p not in native]
        rows.append(time_pass("  of which uncompressed DICOM only", native, load_image, args.repeats))
        if j2k:
            rows.append(time_pass("  of which JPEG 2000 DICOM only", j2k, load_image, args.repeats))
        build = {}
        for fmt in CacheFormat:
            out = root / f"cache-{fmt.value}"
            t0 = time.perf_counter()
            report = preprocess(root / "dicom", out, size=args.cache_size, fmt=fmt, workers=1)
            build[fmt] = time.perf_counter() - t0
            assert report.converted == len(paths), report.summary()
            loader = CachedImageLoader(str(out), fallback=False)
            rows.append(time_pass(f"cache {fmt.value} {args.cache_size}px → eval 224", paths, loader, args.repeats))

    base = rows[0].per_second
    command = "python benchmarks/bench_loading.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"Single process, torch threads 1, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; {args.num} synthetic {args.size}² 12-bit MONOCHROME1 DICOMs "
        f"({len(j2k)} JPEG 2000 lossless, {len(native)} uncompressed); best of {args.repeats} passes, warm files.",
        "",
        "| pipeline | images/s | ms/image | × vs DICOM |",
        "|---|---|---|---|",
        *(f"| {r.name} | {r.per_second:.1f} | {1000 * r.seconds / r.images:.1f} | {r.per_second / base:.2f} |"
          for r in rows),
        "",
        f"One-off costs: writing the DICOMs {gen_s:.1f} s; building the cache (workers=1): "
        + ", ".join(f"{fmt.value} {s:.1f} s ({args.num / s:.1f} img/s)" for fmt, s in build.items()) + ".",
        "",
        f"Command: `{command.strip()}`",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write_md is not None:
        args.write_md.parent.mkdir(parents=True, exist_ok=True)
        args.write_md.write_text("# Image loading benchmark\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
