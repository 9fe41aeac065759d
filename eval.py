"""Evaluate one checkpoint on several held-out datasets (retrieval metrics, label agreement, top-1 dumps).

    python eval.py --checkpoint runs/x/checkpoints/last.ckpt --out eval_out \
        --data openi=configs/eval/openi.yaml --data mimic=configs/eval/mimic.yaml
"""

from cxr.evaluation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
