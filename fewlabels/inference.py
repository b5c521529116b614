"""Inference: the device, the normalisation a model was trained with, and logits for uint8 images.

What the evaluate stage needs of a trained model, apart from the training engine (fewlabels/engine.py), so
that editing how models train (an objective, the sampler) does not make every evaluate stage stale.
"""
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from fewlabels import distributed
from fewlabels.errors import DeviceError

EVAL_BATCH = 1024  # images per forward pass when evaluating: no gradients, so larger is fine


def device_type(name: str) -> str:
    """train.device as the kind of device a run gets: 'auto' is CUDA when torch sees a GPU, else Apple's GPU
    (MPS), else the CPU; a named accelerator torch does not see is an error, not a silent CPU run."""
    seen = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return next(kind for kind, there in seen.items() if there)
    if not seen[name]:
        what = {"cuda": "CUDA GPU", "mps": "Apple GPU (MPS)"}[name]
        raise DeviceError(f"train.device is '{name}' but torch sees no {what}; set train.device to auto or cpu")
    return name


def resolve_device(name: str) -> torch.device:
    """The device train.device `name` picks (device_type). On CUDA the process claims a GPU of its own
    (distributed.claim_gpu) and makes it the current one."""
    kind = device_type(name)
    if kind != "cuda":
        return torch.device(kind)
    device = torch.device("cuda", distributed.claim_gpu(torch.cuda.device_count()))
    torch.cuda.set_device(device)
    return device


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] on the [0, 1] scale (labels not used)."""
    x = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).tolist(), x.std(1).tolist()


class Normalize(torch.nn.Module):
    """uint8 images -> float, scaled to [0, 1], then standardised per channel."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255)

    def forward(self, x):
        return (x.float() - self.mean) / self.std


CPUINFO = Path("/proc/cpuinfo")
BF16_UNITS = {"amx_bf16", "avx512_bf16"}  # the flags Linux lists for CPUs that multiply bf16 matrices in hardware


def cpu_bf16_units(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX, AVX-512 BF16), from the first `flags`
    line of /proc/cpuinfo. False without that file (macOS, Windows) or those flags: oneDNN would emulate bf16
    there, slower than fp32."""
    if not cpuinfo.is_file():
        return False
    with open(cpuinfo) as f:
        for line in f:
            if line.startswith("flags"):
                return bool(BF16_UNITS & set(line.partition(":")[2].split()))
    return False


def bf16(device: torch.device, cfg) -> bool:
    """Whether a run on `device` with TrainConfig `cfg` autocasts to bf16: on CUDA with train.amp, on the CPU with
    train.cpu_bf16 where it has bf16 units (cpu_bf16_units); nowhere else. False: float32 throughout."""
    if device.type == "cuda":
        return cfg.amp
    return device.type == "cpu" and cfg.cpu_bf16 and cpu_bf16_units()


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` where `enabled` (see bf16), float32 otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def predict(model, normalize, images: torch.Tensor, device, amp: bool, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Float32 logits for uint8 images, in eval mode, `batch` at a time; amp: under bf16 autocast (what
    bf16() decides for the run)."""
    model.eval()
    out = []
    for chunk in images.split(batch):
        with autocast(device, amp):
            out.append(model(normalize(chunk.to(device, non_blocking=True))).float())
    return torch.cat(out)


def predict_trained(model, trained: dict, images: torch.Tensor, device, amp: bool, tta: str = "none") -> torch.Tensor:
    """Logits of `model` with trained weights and the normalisation they were trained with: `trained` is
    fit()'s result or the train stage's record (both hold state_dict, mean and std).

    tta="mirror" (evaluate.tta): the log of the mean of the image's and its mirror image's class probabilities,
    so softmax, argmax and cross-entropy read the averaged prediction."""
    model.load_state_dict(trained["state_dict"])
    normalize = Normalize(trained["mean"], trained["std"]).to(device)
    logits = predict(model.to(device), normalize, images, device, amp)
    if tta == "none":
        return logits
    mirrored = predict(model, lambda x: normalize(x).flip(3), images, device, amp)
    return torch.logsumexp(torch.stack([logits.log_softmax(1), mirrored.log_softmax(1)]), 0) - math.log(2)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()
