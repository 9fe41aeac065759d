"""Synthetic-world throughput: phantom rendering vs PNG encoding of the same images (baseline, same run).

Usage: python benchmarks/bench_synthetic.py [--size 256] [--images 300] [--studies 1500]
Pin to one core with ``taskset -c 0`` for the one-core figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cv2

from cxr.data.synthetic import write_synthetic_dataset
from cxr.data.synthetic.phantom import render_phantom, spec_for_study
from cxr.data.synthetic.world import sample_world


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--studies", type=int, default=1500)
    args = parser.parse_args()
    world = sample_world(args.images, seed=0)
    specs = [spec_for_study(s, 0) for s in world]
    render_phantom(specs[0], args.size)  # warm the grid cache
    t0 = time.process_time()
    imgs = [render_phantom(sp, args.size) for sp in specs]
    render_s = time.process_time() - t0
    t0 = time.process_time()
    for img in imgs:
        cv2.imencode(".png", (img * 255).astype("uint8"), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    png_s = time.process_time() - t0
    print(f"| phantom render {args.size}px | {len(imgs) / render_s:.0f} img/s (CPU time) |")
    print(f"| PNG encode {args.size}px (baseline) | {len(imgs) / png_s:.0f} img/s |")
    print(f"| render / PNG-encode time ratio | {render_s / png_s:.2f} |")
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        write_synthetic_dataset(tmp, "csv", args.studies, seed=0, image_size=args.size)
        print(f"| csv layout, {args.studies} studies, {args.size}px | {time.perf_counter() - t0:.1f} s wall, "
              f"{time.process_time() - c0:.1f} s CPU |")


if __name__ == "__main__":
    main()
