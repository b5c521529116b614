# fewlabels pipeline image: `docker run ... fewlabels` runs `dvc repro` on the checkout mounted at /workspace.
#
# Base image choice: the official Python image, not pytorch/pytorch.
#   - torch/torchvision come from PyPI at exactly the versions pinned in pyproject.toml. On Linux x86_64
#     the PyPI torch 2.14.1 wheel is the CUDA 13.0 build: it pulls the CUDA runtime, cuDNN, NCCL, ... as
#     nvidia-* / cuda-toolkit wheels, so no CUDA base image is needed; the NVIDIA Container Toolkit
#     injects only the driver (host driver >= 580 for CUDA 13).
#   - Python 3.11 is the interpreter requirements.lock was resolved with, so every locked wheel exists.
#   - Debian bookworm ships dataset-fashion-mnist (the pipeline's offline first mirror).
#   A pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime image would also carry torch 2.14.1, but on a newer
#   Ubuntu/conda Python than the lock was made with, and its tag could not be verified from here.
# Pinned by tag (Python patch release) and by the digest of its multi-arch index.
FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# git: DVC needs it for `dvc exp` and to read the mounted checkout's .git.
# dataset-fashion-mnist: Fashion-MNIST under /usr/share/datasets/fashion-mnist, the first mirror in
# params.yaml, so the default pipeline runs offline. Its version is pinned (it never changes in bookworm);
# git is left to bookworm's current security release (see .hadolint.yaml, DL3008).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        git \
        dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1

# Dependencies first, code last, so editing the code reuses these (large) layers.
# Layer 1: torch + torchvision (several GB with their CUDA wheels), under the lock's constraints for
# their shared dependencies. These must equal the pins in pyproject.toml (tests/test_container.py checks,
# and layer 2 fails to resolve if they differ).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
WORKDIR /opt/fewlabels
COPY requirements.lock ./
RUN pip install -c requirements.lock "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# Layer 2: the rest of pyproject.toml's [project] dependencies, at the lock's exact versions.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt \
    && pip install -c requirements.lock -r requirements.txt \
    && python -c 'import torch, torchvision, dvc; print("torch", torch.__version__, "cuda", torch.version.cuda)'

# Non-root user. UID/GID default to 1000; pass --build-arg UID=$(id -u) --build-arg GID=$(id -g) to match
# the owner of the mounted checkout. HOME is world-writable (sticky) so a different runtime
# `--user uid:gid` still has somewhere to keep DVC/git/matplotlib state.
# git, system-wide: the checkout is bind-mounted and may be owned by another uid than the container user,
# so trust it (this container only ever sees that one repository); `dvc exp run` commits experiment refs
# and needs an identity (the checkout's own .git/config wins over this fallback).
# Optional DVC cache on a volume: mount one at /dvc-cache and set DVC_SYSTEM_CONFIG_DIR=/etc/fewlabels/dvc.
# A new named volume copies the mode of /dvc-cache, so any uid can write to it.
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "${GID}" fewlabels \
    && useradd --uid "${UID}" --gid "${GID}" --no-log-init --create-home --home-dir /home/fewlabels \
        --shell /bin/bash fewlabels \
    && chmod 1777 /home/fewlabels \
    && git config --system --add safe.directory '*' \
    && git config --system user.name "fewlabels container" \
    && git config --system user.email "fewlabels@container.invalid" \
    && mkdir -p /dvc-cache /etc/fewlabels/dvc \
    && chmod 1777 /dvc-cache \
    && printf '[cache]\n    dir = /dvc-cache\n' > /etc/fewlabels/dvc/config

# The code. The stages run `python -m stages.X` from the mounted checkout (/workspace), and PYTHONPATH puts
# /workspace ahead of site-packages, so the mount always wins; this copy is installed (without dependencies,
# offline with the image's setuptools) so the image can also import fewlabels without a mount.
COPY . ./
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info

ENV HOME=/home/fewlabels \
    PYTHONPATH=/workspace \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER ${UID}:${GID}
WORKDIR /workspace
ENTRYPOINT ["dvc"]
CMD ["repro"]
