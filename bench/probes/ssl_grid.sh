#!/usr/bin/env bash
# The semi-supervised grid behind the README's label-efficiency table, outside DVC and in parallel
# (one process per cell: made for a GPU host with spare CPU cores; ~6 minutes on an H100). Usage:
#   bash bench/probes/ssl_grid.sh [RAW_DIR] [OUT_JSONL]
# Each line of OUT_JSONL is one bench/recipe.py result. Model vgg_bn, Adam with one-cycle lr 3e-3,
# flip+crop; skip with label smoothing 0.1, fixmatch with 3 unlabeled batches per labeled batch.
set -euo pipefail
raw=()  # no RAW_DIR: recipe.py's default, params.yaml's file:// mirror (Debian's copy)
if [ -n "${1:-}" ]; then raw=(--raw "$1"); fi
out=${2:-bench/results/ssl_grid.jsonl}
mkdir -p "$(dirname "$out")"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD
base="train.patience=1000 train.scheduler=onecycle train.channels_last=true train.optimizer=adam train.lr=0.003"
skip="train.augment=flip_crop train.label_smoothing=0.1"
fixmatch="train.augment=flip_crop ssl.method=fixmatch ssl.unlabeled_ratio=3"
cell() { python3 bench/recipe.py "${raw[@]}" --out "$out" --model vgg_bn "$@" $base > /dev/null 2>&1 & }
for seed in 0 1; do
  cell --frac 0.1 --seed $seed train.epochs=100 $skip
  cell --frac 0.1 --seed $seed train.epochs=100 $fixmatch
done
cell --frac 0.1 train.epochs=100 ssl.method=fixmatch ssl.unlabeled_ratio=3 train.augment=flip_crop_cutout
for frac in 0.01 0.05; do
  cell --frac $frac train.epochs=100 $skip
  cell --frac $frac train.epochs=100 $fixmatch
done
cell --frac 0.25 train.epochs=40 $skip
cell --frac 0.25 train.epochs=40 $fixmatch
cell --frac 1.0 train.epochs=20 $skip
wait
cat "$out"
