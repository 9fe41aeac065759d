#!/usr/bin/env bash
# `make demo`: synthetic CXR world -> dual-tower training (timm CNN from scratch + frozen real MiniLM) ->
# retrieval metrics on the held-out split -> TensorBoard logs and a checkpoint. CPU, a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
OUT="outputs/demo"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)

echo "== 1/3 the synthetic CXR world ($OUT/data) and a held-out world in the Open-I layout ($OUT/openi)"
if [ ! -f "$OUT/data/manifest.csv" ]; then
    "$PY" -m cxr.data.synthetic --layout csv --out "$OUT/data" --num-studies 1500 --seed 0 --image-size 256
fi
if [ ! -f "$OUT/openi/indiana_projections.csv" ]; then
    "$PY" -m cxr.data.synthetic --layout openi --out "$OUT/openi" --num-studies 300 --seed 1 --image-size 256
fi

echo "== 2/3 training (configs/demo.yaml)"
rm -rf "$OUT/run"
"$PY" train.py fit --config configs/demo.yaml

ckpt="$(ls "$OUT"/run/checkpoints/best*.ckpt | head -n 1)"
echo "== 3/3 evaluating $ckpt on the held-out test split and on the held-out Open-I-layout world"
"$PY" eval.py --checkpoint "$ckpt" --data synthetic=configs/demo.yaml --data openi=configs/eval/demo_openi.yaml \
    --split test --out "$OUT/eval"

echo
echo "TensorBoard logs : $OUT/run   (tensorboard --logdir $OUT/run)"
echo "Checkpoint       : $ckpt"
echo "Metrics table    : $OUT/eval/results.md"
echo "Demo wall time   : $(( $(date +%s) - start )) s (excluding the install)"
