#!/usr/bin/env bash
# CPU evidence for issue 14's methods: does each learn from unlabeled batches? skip beside fixmatch, flexmatch,
# freematch and fixmatch with distribution alignment, one seed, 1% of the labels (540 images), bn_cnn, with the
# published FixMatch optimizer and schedule (SGD with Nesterov momentum, lr 0.03, cosine, weight decay 5e-4,
# 7 unlabeled batches per labeled one) and the RandAugment strong view; short (15 epochs, ~5 min each on one
# core), so the figures say "it learns", not how far it gets. No weight average: at 1% labels an epoch is 9
# optimizer steps, and train.ema 0.999 averages over ~1,000 steps, more than the whole run. Usage:
#   PATH=.venv/bin:$PATH bash bench/probes/ssl_methods_cpu.sh [RAW_DIR] [OUT_JSONL]
# One process at a time, one thread each, niced (the machine is shared). Each line of OUT_JSONL is one
# bench/recipe.py result.
set -euo pipefail
raw=()  # no RAW_DIR: recipe.py's default, params.yaml's file:// mirror (Debian's copy)
if [ -n "${1:-}" ]; then raw=(--raw "$1"); fi
out=${2:-bench/results/ssl_methods_cpu.jsonl}
mkdir -p "$(dirname "$out")"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=$PWD
base="train.epochs=15 train.device=cpu train.patience=1000 train.augment=flip_crop train.optimizer=sgd
      train.nesterov=true train.lr=0.03 train.scheduler=cosine train.weight_decay=0.0005 train.ema=0.0
      ssl.unlabeled_ratio=7 ssl.warmup_epochs=0 ssl.strong=randaugment"
run() { nice python3 bench/recipe.py "${raw[@]}" --out "$out" --frac 0.01 --model bn_cnn $base "$@"; }
run ssl.method=skip
run ssl.method=fixmatch
run ssl.method=flexmatch
run ssl.method=freematch
run ssl.method=fixmatch ssl.dist_align=true
cat "$out"
