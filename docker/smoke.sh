#!/usr/bin/env bash
# The container, built and run for real (`make image-test`; CI runs it, and so can any host with docker or podman):
#   1. picks the engine: docker where a daemon answers and a docker client on PATH builds with BuildKit (the
#      Dockerfile's RUN --mount and --secret need it), else podman (apt-installed when missing and root);
#   2. builds the image from this checkout's Dockerfile as your uid/gid (root included); where the default base
#      image cannot be pulled (no registry), on a stand-in base built here (docker/standin-base.sh); warns first
#      when the disk looks short, and removes the image it replaces under the same tag (docs/container.md, Disk);
#   3. in a throwaway clone of HEAD mounted at /workspace, as your uid:gid and with no network:
#      `dvc version`, `dvc repro index` (Fashion-MNIST from the image's Debian package) and one short epoch,
#      `dvc exp run -S train.epochs=1 -S train.epoch_steps=100 -S models=[bn_small] -S labeled_frac=0.1`;
#   4. checks the epoch line's device (cuda where the host has an NVIDIA GPU, which is then also checked with
#      nvidia-smi in the container, else cpu), metrics/bn_small.json, and that the data stages' outputs hash as
#      in the committed dvc.lock (host and container agree);
#   5. `dvc plots show` in the container, whose page must need no network (plots/offline_page.html);
#   6. stops a running experiment container (`$ENGINE stop`, the image's STOPSIGNAL): the stage says
#      `interrupted:`, the container exits in time, and the next container is not blocked by DVC's lock.
# With several engines (ENGINE="podman docker", as CI runs it), the stand-in base is debootstrapped once and
# imported into each; then their builds run in parallel (most of a build is pip unpacking wheels and the engine
# committing the layer, on one core each) and their runs one engine at a time (training takes every core),
# each line prefixed with its engine's name.
# Usage: docker/smoke.sh
#   IMAGE=fewlabels:test  ENGINE=docker|podman|"podman docker"  BASE_IMAGE=<image> (skips the pull)
#   KEEP=1 (keep the clone)  PIP_CERT=<CA bundle> (default /etc/ssl/certs/ca-certificates.crt, passed as a build
#   secret when it exists)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-localhost/fewlabels:test}"
STANDIN_BASE="localhost/fewlabels-base:bookworm"
NEED_GB=16  # free disk one build from an empty cache needs at its peak (docs/container.md: 30.5 GB for two)
uid="$(id -u)" gid="$(id -g)"

step() { printf '\n==> [%d s] %s\n' "$SECONDS" "$*"; }  # seconds since this script started
fail() { printf '\nIMAGE TEST FAILED: %s\n' "$*" >&2; exit 1; }
apt_install() {  # apt_install COMMAND PACKAGE...: install PACKAGEs unless COMMAND is already there
    local cmd="$1"; shift
    command -v "$cmd" >/dev/null && return
    if [[ "$uid" != 0 ]] || ! command -v apt-get >/dev/null; then
        fail "$cmd is missing: install ${*} (needs root on Debian)"
    fi
    step "installing $*"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- the engine ---------------------------------------------------------------------------------------------
export DOCKER_BUILDKIT=1  # docker's legacy builder knows neither RUN --mount nor --secret
docker_client() {  # the first docker on PATH that reaches a daemon and builds with BuildKit (buildx, or a
    # daemon >= 18.09): a newer client without the buildx plugin cannot, while the daemon's package's own client can
    local client
    for client in $(type -ap docker); do
        if "$client" info >/dev/null 2>&1 && "$client" build --help 2>/dev/null | grep -q -- '--secret'; then
            echo "$client"
            return
        fi
    done
    return 1
}
engine_command() {  # engine_command docker|podman: sets $engine_cmd, the program that runs it
    case "$1" in
        docker) engine_cmd="$(docker_client)" \
            || fail "ENGINE=docker: no daemon answers, or no docker on PATH can build with BuildKit (install docker-buildx)" ;;
        # runc, not crun (Debian's default for podman): crun fails on hosts with hybrid cgroups.
        podman) apt_install podman podman runc; engine_cmd=podman ;;
        *) fail "ENGINE=$1: docker or podman" ;;
    esac
}
default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' "$REPO/Dockerfile")"
has_base() {  # has_base ENGINE_CMD: the default base image is there or can be pulled
    "$1" image inspect "$default_base" >/dev/null 2>&1 || "$1" pull "$default_base" >/dev/null
}
has_standin() { "$1" image inspect "$STANDIN_BASE" >/dev/null 2>&1; }
build_standin() {  # build_standin ENGINE_CMD...: one debootstrap, imported into each
    apt_install debootstrap debootstrap
    step "building the stand-in base $STANDIN_BASE for ${*}"
    "$REPO/docker/standin-base.sh" "$@" "$STANDIN_BASE"
}

read -r -a engines <<<"${ENGINE:-}"
if ((${#engines[@]} > 1)); then
    needs_standin=()
    for e in "${engines[@]}"; do
        engine_command "$e"
        if [[ -z "${BASE_IMAGE:-}" ]] && ! has_base "$engine_cmd" && ! has_standin "$engine_cmd"; then
            needs_standin+=("$engine_cmd")
        fi
    done
    if ((${#needs_standin[@]})); then build_standin "${needs_standin[@]}"; fi
    step "testing ${engines[*]} in parallel (the builds; then the runs one engine at a time)"
    # Each engine's test in its own process group (job control), ended as a whole by a TERM passed on from
    # Ctrl-C or a TERM of this script (a background job may have inherited an ignored SIGINT).
    set -m
    pids=()
    trap 'kill -TERM -- "${pids[@]/#/-}" 2>/dev/null' INT TERM
    runs_lock="$(mktemp "${TMPDIR:-/tmp}/fewlabels-smoke-runs.XXXXXX")"
    for e in "${engines[@]}"; do
        # pipefail: the job's status is the test's
        (ENGINE="$e" RUNS_LOCK="$runs_lock" BUILDS_AT_ONCE="${#engines[@]}" bash "${BASH_SOURCE[0]}" 2>&1 | sed -u "s/^/$e| /") &
        pids+=($!)
    done
    failed=()
    for i in "${!engines[@]}"; do wait "${pids[$i]}" || failed+=("${engines[$i]}"); done
    rm -f "$runs_lock"
    ((${#failed[@]} == 0)) || fail "${failed[*]} failed (their lines above)"
    step "image test passed with ${engines[*]}"
    exit
fi
if ((${#engines[@]} == 1)); then
    engine="${engines[0]}"
elif docker_client >/dev/null; then
    engine=docker
else
    engine=podman
fi
engine_command "$engine"
build=("$engine_cmd" build --force-rm)  # --force-rm: a failed step leaves no container that pins the image
run=("$engine_cmd" run --rm)
if [[ "$engine" == podman ]]; then
    # chroot isolation builds inside another container or sandbox, where buildah's default (oci) cannot.
    build+=(--isolation chroot)
    if command -v runc >/dev/null; then run+=(--runtime runc); fi
    # podman passes the host's rlimits to the container and fails where they exceed what it may set.
    run+=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
fi
echo "engine: $engine ($engine_cmd: $("$engine_cmd" --version))"

# --- the image ----------------------------------------------------------------------------------------------
base="${BASE_IMAGE:-$default_base}"
if [[ -n "${BASE_IMAGE:-}" ]]; then
    "$engine_cmd" image inspect "$base" >/dev/null 2>&1 || "$engine_cmd" pull "$base" >/dev/null \
        || fail "cannot pull BASE_IMAGE=$base"
elif ! has_base "$engine_cmd"; then
    echo "cannot pull $base (no registry?): using the stand-in base $STANDIN_BASE"
    base="$STANDIN_BASE"
    has_standin "$engine_cmd" || build_standin "$engine_cmd"
fi
build+=(--build-arg "BASE_IMAGE=$base" --build-arg "UID=$uid" --build-arg "GID=$gid")
ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
if [[ -s "$ca" ]]; then build+=(--secret "id=pip_cert,src=$ca"); fi  # for a TLS-intercepting proxy

# Disk: a build from an empty cache needs about NEED_GB free where the engine keeps its images (the pip cache,
# the unpacked venv, and the layer committed from it), times the builds running at once (BUILDS_AT_ONCE, set
# for each engine's test by the several-engines branch above); a cached build needs little, so too little is a
# warning.
need_gb=$((NEED_GB * ${BUILDS_AT_ONCE:-1}))
if [[ "$engine" == podman ]]; then storage_format='{{.Store.GraphRoot}}'; else storage_format='{{.DockerRootDir}}'; fi
storage="$("$engine_cmd" info --format "$storage_format" 2>/dev/null || true)"
if [[ -d "$storage" ]]; then
    free_gb="$(df -P -BG "$storage" | awk 'NR == 2 { print $4 + 0 }')"
    if ((free_gb < need_gb)); then
        echo "warning: ${free_gb} GB free in $storage; ${BUILDS_AT_ONCE:-1} build(s) from an empty cache need about ${need_gb} GB" \
            "(old images: $engine image prune)"
    fi
fi
old_image="$("$engine_cmd" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
# A failed podman build can leave its working containers behind (seen when the disk filled up while it committed
# a layer: 13 GB kept), invisible to `podman ps -a`: the ones this build started are removed.
working_containers() { if [[ "$engine" == podman ]]; then "$engine_cmd" ps -a --external --format '{{.ID}}' | sort || true; fi; }
containers_before="$(working_containers)"

step "building $IMAGE from $REPO (base $base, uid:gid $uid:$gid)"
start=$SECONDS
if ! "${build[@]}" -t "$IMAGE" "$REPO"; then
    for id in $(comm -13 <(echo "$containers_before") <(working_containers)); do
        "$engine_cmd" rm --force --storage "$id" >/dev/null && echo "removed the failed build's working container $id"
    done
    fail "the build of $IMAGE failed (its lines above)"
fi
read -r new_image size < <("$engine_cmd" image inspect --format '{{.Id}} {{.Size}}' "$IMAGE")
echo "built in $((SECONDS - start)) s; size: $size bytes"
# The image the build replaced: untagged now and 6.7 GB whenever the lock changed, so it goes (with its layers
# that no other image uses); kept, and said so, while a container still uses it.
if [[ -n "$old_image" && "$old_image" != "$new_image" ]]; then
    if "$engine_cmd" image rm "$old_image" >/dev/null; then
        echo "removed the image it replaces, $old_image"
    else
        echo "kept the image it replaces, $old_image (see the line above)"
    fi
fi

# --- runs ---------------------------------------------------------------------------------------------------
if [[ -n "${RUNS_LOCK:-}" ]]; then  # several engines: one runs at a time, since training takes every core
    exec {runs_lock}>"$RUNS_LOCK"  # held until this script ends
    step "waiting for the other engines' runs"
    flock "$runs_lock"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fewlabels-smoke.XXXXXX")"
LOG="$WORK/exp-run.log"
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 || "${KEEP:-0}" == 1 ]]; then echo "kept $WORK (clone and log) for inspection"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# Every run: your uid/gid (files in the clone stay yours), no network, the host IPC namespace (shared memory).
run+=(--user "$uid:$gid" --network none --ipc host)
device=cpu
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    device=cuda
    if [[ "$engine" == docker ]]; then run+=(--gpus all); else run+=(--device nvidia.com/gpu=all); fi
fi

step "dvc version"
"${run[@]}" "$IMAGE" version || fail "dvc does not run in the image"

if [[ "$device" == cuda ]]; then
    step "the GPU: nvidia-smi and torch inside the container"
    "${run[@]}" --entrypoint nvidia-smi "$IMAGE" \
        || fail "nvidia-smi failed in the container: is the NVIDIA Container Toolkit installed (podman: its CDI spec)?"
    "${run[@]}" --entrypoint python "$IMAGE" -c '
import torch
print("torch", torch.__version__, "built for CUDA", torch.version.cuda)
assert torch.cuda.is_available(), "torch.cuda.is_available() is False (the CUDA 13 wheels need an NVIDIA driver >= 580)"
print("device 0:", torch.cuda.get_device_name(0))
' || fail "torch in the image cannot use the GPU"
fi

step "cloning HEAD of $REPO into $WORK/repo (uncommitted changes are not part of the test)"
git clone --quiet --no-hardlinks "$REPO" "$WORK/repo"
run+=(-v "$WORK/repo:/workspace")

step "dvc repro index (offline Fashion-MNIST)"
"${run[@]}" "$IMAGE" repro index || fail "dvc repro index failed in the container"

step "the data stages' outputs hash as in the committed dvc.lock"
"${run[@]}" --entrypoint python "$IMAGE" -c '
import subprocess, yaml
committed = yaml.safe_load(subprocess.run(["git", "show", "HEAD:dvc.lock"], capture_output=True, check=True).stdout)
with open("dvc.lock") as f:
    here = yaml.safe_load(f)
outs = lambda lock, stage: {o["path"]: o.get("md5") for o in lock["stages"].get(stage, {}).get("outs", [])}
bad = [f"{s}: container {outs(here, s)} != dvc.lock {outs(committed, s)}"
       for s in ("download", "unpack", "split", "index") if outs(here, s) != outs(committed, s)]
assert not bad, "\n".join(bad + ["(regenerate dvc.lock with make run on the host and commit it)"])
print("download, unpack, split, index: outputs equal the committed dvc.lock")
' || fail "the container's data differ from the committed dvc.lock"

# 100 steps of batch 64, about one pass over 10% of the labels: this run takes 63 s of CPU on the CI machine,
# 232 s with the default budget (the whole train split's worth, 844 steps).
exp=(exp run -S train.epochs=1 -S train.epoch_steps=100 -S 'models=[bn_small]' -S labeled_frac=0.1)
step "one short epoch of bn_small on 10% of the labels: dvc ${exp[*]}"
"${run[@]}" "$IMAGE" "${exp[@]}" 2>&1 | tee "$LOG" \
    || fail "dvc exp run failed (log: $LOG)"

step "checking the training log and the metrics"
# fewlabels/engine.py ends each epoch line with the device type: "epoch   1/1  train loss ...  (cpu)".
# The progress bar shares the log and redraws with carriage returns: split on them first.
epoch_line="$(tr '\r' '\n' < "$LOG" | grep -E 'epoch +1/1 +train loss' | sed -E 's/^ +//' | tail -n 1 || true)"
[[ -n "$epoch_line" ]] || fail "no 'epoch 1/1' line in the training log (log: $LOG)"
echo "$epoch_line"
[[ "$epoch_line" == *"($device)"* ]] || fail "training did not run on $device: $epoch_line"
"${run[@]}" --entrypoint python "$IMAGE" -c '
import json, sys
with open("metrics/bn_small.json") as f:
    scores = json.load(f)["bn_small"]  # scores only: {model: {test: {...}, valid: {...}}}
with open("runs/bn_small.json") as f:
    run = json.load(f)  # how it ran: device, epochs, timings
assert run["epochs_run"] == 1 and run["device"].split(":")[0] == sys.argv[1], run  # "cuda:0" on a GPU
accuracy = scores["test"]["accuracy"]
assert 0.5 < accuracy <= 1, f"100 steps of bn_small should beat 50% test accuracy, got {accuracy}"
print("metrics/bn_small.json: test accuracy", accuracy, "on", run["device"])
' "$device" || fail "metrics/bn_small.json or runs/bn_small.json is missing or wrong"

step "dvc plots show, offline: the page carries its scripts (plots/offline_page.html)"
"${run[@]}" "$IMAGE" plots show || fail "dvc plots show failed in the container"
page="$WORK/repo/dvc_plots/index.html"
grep -q "vegaEmbed('#dvclive_bn_small" "$page" || fail "no training curves of bn_small in $page"
! grep -q '<script[^>]*src=' "$page" || fail "$page loads a script from the network"

step "docker stop of a running experiment: one line from the stage, then the next container runs"
name="fewlabels-smoke-stop-$$"
"$engine_cmd" run -d --name "$name" "${run[@]:3}" "$IMAGE" exp run -S seed=1 -S train.epochs=20 -S 'models=[bn_small]' \
    -S labeled_frac=0.1 >/dev/null
for _ in $(seq 600); do  # until the train stage has started (its first line), at most 10 minutes
    if "$engine_cmd" logs "$name" 2>&1 | grep -q 'bn_small: .* parameters;'; then break; fi
    [[ "$("$engine_cmd" inspect --format '{{.State.Running}}' "$name")" == true ]] || break
    sleep 1
done
start=$SECONDS
"$engine_cmd" stop -t 60 "$name" >/dev/null
stopped_in=$((SECONDS - start))
stop_log="$("$engine_cmd" logs "$name" 2>&1)"
"$engine_cmd" rm "$name" >/dev/null
echo "$stop_log" | grep -E '^(interrupted|ERROR)' || true
echo "$stop_log" | grep -q '^interrupted: ' || fail "the stage did not report the interruption:
$stop_log"
((stopped_in < 60)) || fail "the container ignored the stop signal for ${stopped_in} s (killed at the timeout)"
"${run[@]}" "$IMAGE" repro index || fail "the next container could not run dvc after a stopped one"
echo "stopped in ${stopped_in} s; the next container ran"

step "image test passed: $IMAGE builds, runs offline as uid $uid, trains on $device and stops cleanly"
