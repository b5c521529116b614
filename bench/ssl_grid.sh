#!/usr/bin/env bash
# The semi-supervised grid behind the README's label-efficiency table, outside DVC and in parallel
# (one process per cell: made for a GPU host with spare CPU cores). Usage:
#   bash bench/ssl_grid.sh [RAW_DIR] [OUT_JSONL]
# Each line of OUT_JSONL is one bench/recipe.py result. Model bn_cnn, one-cycle lr 3e-3, flip+crop.
set -euo pipefail
raw=${1:-/usr/share/datasets/fashion-mnist}
out=${2:-bench/results/ssl_grid.jsonl}
mkdir -p "$(dirname "$out")"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD
base="train.patience=1000 train.augment=flip_crop train.scheduler=onecycle train.lr=0.003"
cell() { python3 bench/recipe.py --raw "$raw" --out "$out" --model bn_cnn "$@" $base > /dev/null 2>&1 & }
cell --frac 0.1 train.epochs=60 train.label_smoothing=0.1
for ratio in 3 7; do cell --frac 0.1 train.epochs=60 ssl.method=fixmatch ssl.unlabeled_ratio=$ratio; done
cell --frac 0.1 train.epochs=60 ssl.method=fixmatch ssl.unlabeled_ratio=3 ssl.threshold=0.8
cell --frac 0.1 train.epochs=60 ssl.method=fixmatch ssl.unlabeled_ratio=3 ssl.weight=2
cell --frac 0.1 train.epochs=60 ssl.method=pseudo_label ssl.unlabeled_ratio=3
for frac in 0.01 0.05 0.25; do
  cell --frac $frac train.epochs=40 train.label_smoothing=0.1
  cell --frac $frac train.epochs=40 ssl.method=fixmatch ssl.unlabeled_ratio=3
done
cell --frac 1.0 train.epochs=20 train.label_smoothing=0.1
wait
cat "$out"
