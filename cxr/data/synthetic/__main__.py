"""``python -m cxr.data.synthetic --layout L --out DIR --num-studies N --seed S [--image-size 256]``.

Writes a synthetic dataset and prints a short summary (counts per split, label prevalence). Never prints
report text.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from cxr.data.synthetic import Layout, write_synthetic_dataset
from cxr.labels import CHEXPERT_OBSERVATIONS, LabelState


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (also installed as ``cxr-synthetic``)."""
    parser = argparse.ArgumentParser(prog="python -m cxr.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--layout", required=True, choices=[layout.value for layout in Layout])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-studies", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--report-styles", default="legacy", choices=["legacy", "realistic"],
                        help="legacy: the original three report styles; realistic: nine real-report styles")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    studies = write_synthetic_dataset(args.out, args.layout, args.num_studies, seed=args.seed,
                                      image_size=args.image_size, report_styles=args.report_styles)
    elapsed = time.perf_counter() - start
    n_images = sum(len(s.views) for s in studies)
    print(f"wrote {len(studies)} studies / {n_images} images ({args.layout}, {args.image_size}px) "
          f"to {args.out} in {elapsed:.1f}s")
    splits = Counter(s.split.value for s in studies)
    patients = {split: len({s.patient_id for s in studies if s.split.value == split}) for split in splits}
    for split in ("train", "val", "test"):
        print(f"  {split:5s}: {splits.get(split, 0):6d} studies, {patients.get(split, 0):6d} patients")
    labels = np.stack([s.labels for s in studies])
    print(f"  {'observation':28s} {'pos':>6s} {'unc':>6s} {'neg':>6s}")
    for i, name in enumerate(CHEXPERT_OBSERVATIONS):
        col = labels[:, i]
        print(f"  {name:28s} {np.mean(col == LabelState.POSITIVE):6.3f} {np.mean(col == LabelState.UNCERTAIN):6.3f} "
              f"{np.mean(col == LabelState.NEGATIVE):6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
