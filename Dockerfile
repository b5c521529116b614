# fewlabels pipeline image: `docker run ... fewlabels` runs `dvc repro` on the checkout mounted at /workspace.
# Builds with docker (BuildKit) and with podman/buildah; no SHELL instruction, which their default OCI format drops.
#
# Base image: any Debian bookworm with Python 3.11 and its venv module (requirements.lock is resolved for
# CPython 3.11 on Linux x86_64). The default is the official Python image, pinned by tag and by the digest of
# its multi-arch index; override it for a registry mirror or a locally built base:
#   --build-arg BASE_IMAGE=mirror.example/library/python:3.11.15-slim-bookworm@sha256:...
#   --build-arg BASE_IMAGE=localhost/fewlabels-base:bookworm   (docker/standin-base.sh: no registry needed)
# No CUDA base image is needed: the PyPI torch 2.14.1 wheel for Linux x86_64 is the CUDA 13.0 build and brings
# the CUDA runtime, cuDNN, NCCL, ... as nvidia-* wheels; the NVIDIA Container Toolkit injects only the driver
# (host driver >= 580 for CUDA 13).
ARG BASE_IMAGE=docker.io/library/python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3
FROM ${BASE_IMAGE}

# git: DVC needs it for `dvc exp` and to read the mounted checkout's .git.
# dataset-fashion-mnist: Fashion-MNIST under /usr/share/datasets/fashion-mnist, the first mirror in
# params.yaml, so the default pipeline runs offline. Its version is pinned (it never changes in bookworm);
# git is left to bookworm's current security release (see .hadolint.yaml, DL3008).
# tini: PID 1 (see ENTRYPOINT), so a stop signal reaches dvc and its stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        git \
        tini \
        dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies first, code last, so editing the code reuses this (large) layer.
# LOCK: which lock to install, every package at one version and each file checked against its sha256
# (`make lock` writes them). requirements.lock has PyPI's torch, the CUDA build (about 6 GB installed);
# requirements-cpu.lock (`make lock-cpu`) has the CPU build from PyTorch's CPU index, which it names itself.
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS: where pip looks for those files (a PyPI mirror, a
# folder of wheels mounted with `podman build --volume`); the hashes decide what is accepted.
# Build-time only, never in the image: pip's download cache (kept by the builder between builds) and the CA
# bundle of a TLS-intercepting proxy (`--secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt`).
ARG LOCK=requirements.lock
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
WORKDIR /opt/fewlabels
COPY ${LOCK} ./requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv "${VIRTUAL_ENV}" \
    && pip install --require-hashes -r requirements.lock \
    && pip check \
    && python -c 'import torch, torchvision, dvc; print("torch", torch.__version__, "cuda", torch.version.cuda)'

# The user. UID/GID default to 1000; `--build-arg UID=$(id -u) --build-arg GID=$(id -g)` matches the owner of
# the mounted checkout. A uid or gid the base already has (0 for root, 100 users, 20 on macOS) is reused,
# not created again. HOME is world-writable (sticky) so a different runtime `--user uid:gid` still has
# somewhere to keep DVC/git/matplotlib state.
# git, system-wide: the checkout is bind-mounted and may be owned by another uid than the container user,
# so trust it (this container only ever sees that one repository); `dvc exp run` commits experiment refs
# and needs an identity (the checkout's own .git/config wins over this fallback).
# Optional DVC cache on a volume: mount one at /dvc-cache and set DVC_SYSTEM_CONFIG_DIR=/etc/fewlabels/dvc.
# A new named volume copies the mode of /dvc-cache, so any uid can write to it.
ARG UID=1000
ARG GID=1000
RUN if ! getent group "${GID}" >/dev/null; then groupadd --gid "${GID}" fewlabels; fi \
    && if ! getent passwd "${UID}" >/dev/null; then \
        useradd --uid "${UID}" --gid "${GID}" --no-log-init --no-create-home --home-dir /home/fewlabels \
            --shell /bin/bash fewlabels; \
    fi \
    && mkdir -p /home/fewlabels \
    && chmod 1777 /home/fewlabels \
    && git config --system --add safe.directory '*' \
    && git config --system user.name "fewlabels container" \
    && git config --system user.email "fewlabels@container.invalid" \
    && mkdir -p /dvc-cache /etc/fewlabels/dvc \
    && chmod 1777 /dvc-cache \
    && printf '[cache]\n    dir = /dvc-cache\n' > /etc/fewlabels/dvc/config

# The code. The stages run `python -m stages.X` from the mounted checkout (/workspace), and PYTHONPATH puts
# /workspace ahead of site-packages, so the mount always wins; this copy is installed (without dependencies,
# offline with the locked setuptools) so the image can also import fewlabels without a mount.
COPY . ./
RUN pip install --no-deps --no-build-isolation --no-cache-dir . \
    && rm -rf build ./*.egg-info

ENV HOME=/home/fewlabels \
    PYTHONPATH=/workspace \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER ${UID}:${GID}
WORKDIR /workspace
# `docker stop` (or Ctrl-C) sends SIGINT, what dvc and the stages handle as Ctrl-C: the stage prints
# `interrupted: ...` and keeps nothing partial, and dvc releases its lock (.dvc/tmp/rwlock). tini is PID 1,
# which the kernel would shield from signals it does not handle, and with -g passes the signal to dvc's whole
# process group, as a terminal does. With dvc as PID 1, docker stop ended in SIGKILL after 10 s and left
# the lock held, blocking every later container.
STOPSIGNAL SIGINT
ENTRYPOINT ["tini", "-g", "--", "dvc"]
CMD ["repro"]
