#!/usr/bin/env bash
# Smoke test of the container on a host with Docker, an NVIDIA GPU and the NVIDIA Container Toolkit:
#   1. builds the image (as your uid/gid),
#   2. runs nvidia-smi inside it, and checks that torch sees CUDA,
#   3. runs a one-epoch, one-model pipeline (`dvc exp run -S train.epochs=1 -S models=[cnn]`) on a throwaway
#      clone of this checkout's HEAD (so your workspace, params.yaml and experiments are left alone), and
#   4. checks that the training log says the epoch ran on cuda.
# Usage: docker/smoke.sh   (IMAGE=fewlabels:smoke by default; the clone and log are kept on failure or with KEEP=1)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-fewlabels:smoke}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fewlabels-smoke.XXXXXX")"
LOG="$WORK/exp-run.log"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nSMOKE TEST FAILED: %s\n' "$*" >&2; exit 1; }
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 || "${KEEP:-0}" == 1 ]]; then
        echo "kept $WORK (clone and log) for inspection"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

command -v docker >/dev/null || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "cannot reach the Docker daemon (is it running, and may you use it?)"

step "building $IMAGE from $REPO"
docker build -t "$IMAGE" --build-arg "UID=$(id -u)" --build-arg "GID=$(id -g)" "$REPO"

# Every run: your uid/gid (files in the clone stay yours), all GPUs, the host IPC namespace (shared memory).
run=(docker run --rm --gpus all --user "$(id -u):$(id -g)" --ipc=host)

step "nvidia-smi inside the container"
"${run[@]}" --entrypoint nvidia-smi "$IMAGE" \
    || fail "nvidia-smi failed in the container: is the NVIDIA Container Toolkit installed and does 'docker run --gpus all' work?"

step "torch sees the GPU"
"${run[@]}" --entrypoint python "$IMAGE" -c '
import torch
print("torch", torch.__version__, "built for CUDA", torch.version.cuda)
assert torch.cuda.is_available(), "torch.cuda.is_available() is False (the CUDA 13 wheels need an NVIDIA driver >= 580)"
print("device 0:", torch.cuda.get_device_name(0))
' || fail "torch in the image cannot use the GPU"

step "cloning HEAD of $REPO into $WORK/repo (uncommitted changes are not part of the smoke test)"
git clone --quiet --no-hardlinks "$REPO" "$WORK/repo"

step "one-epoch pipeline: dvc exp run -S train.epochs=1 -S models=[cnn]"
"${run[@]}" -v "$WORK/repo":/workspace "$IMAGE" \
    exp run -S train.epochs=1 -S 'models=[cnn]' 2>&1 | tee "$LOG" \
    || fail "dvc exp run failed (log: $LOG)"

step "checking the training log"
# fewlabels/engine.py ends each epoch line with the device type: "epoch   1/1  train loss ...  (cuda)".
# The progress bar shares the log and redraws with carriage returns: split on them first.
epoch_line="$(tr '\r' '\n' < "$LOG" | grep -E 'epoch +1/1 +train loss' | sed -E 's/^ +//' | tail -n 1 || true)"
[[ -n "$epoch_line" ]] || fail "no 'epoch 1/1' line in the training log (log: $LOG)"
echo "$epoch_line"
[[ "$epoch_line" == *"(cuda)"* ]] || fail "training did not run on the GPU: $epoch_line"
[[ -s "$WORK/repo/metrics/cnn.json" ]] || fail "the pipeline wrote no metrics/cnn.json"

step "smoke test passed: the image sees the GPU and trains on cuda"
