"""``python -m cxr.data.synthetic``: write a synthetic CXR dataset and print a summary (never report text)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import numpy as np

from cxr.data.synthetic import Layout, write_synthetic_dataset
from cxr.labels import CHEXPERT_OBSERVATIONS, LabelState


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cxr.data.synthetic", description=__doc__)
    parser.add_argument("--layout", default=Layout.CSV.value, choices=[x.value for x in Layout])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-studies", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    studies = write_synthetic_dataset(args.out, layout=args.layout, num_studies=args.num_studies, seed=args.seed,
                                      image_size=args.image_size)
    elapsed = time.perf_counter() - start
    splits = Counter(s.split.value for s in studies)
    images = sum(len(s.views) for s in studies)
    patients = len({s.patient_id for s in studies})
    print(f"wrote {len(studies)} studies ({images} images, {patients} patients) as '{args.layout}' to {args.out} "
          f"in {elapsed:.1f} s")
    print("split: " + ", ".join(f"{k}={v}" for k, v in sorted(splits.items())))
    labels = np.stack([s.labels for s in studies])
    print("positive prevalence: " + ", ".join(
        f"{name} {np.mean(labels[:, i] == LabelState.POSITIVE):.0%}" for i, name in enumerate(CHEXPERT_OBSERVATIONS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
