"""Batched tensor augmentations: whole batches at once on the training device, no per-sample PIL.

All functions take normalised float images [B, C, H, W] and return a new tensor of the same shape.
"""
import torch


def flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    mask = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def translate(x: torch.Tensor, pixels: int = 2) -> torch.Tensor:
    """Shift each image by up to `pixels` in each direction (zero fill), one gather for the batch."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pixels,) * 4)
    dy = torch.randint(0, 2 * pixels + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * pixels + 1, (b, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channels, rows, cols]


def cutout(x: torch.Tensor, size: int = 8) -> torch.Tensor:
    """Zero one random size x size square per image (clipped at the borders)."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return x.masked_fill(inside, 0.0)


def jitter(x: torch.Tensor, strength: float = 0.4) -> torch.Tensor:
    """Random contrast (scale) and brightness (shift) per image, up to +-strength (in std units)."""
    scale = 1 + strength * (2 * torch.rand(len(x), 1, 1, 1, device=x.device) - 1)
    shift = strength * (2 * torch.rand(len(x), 1, 1, 1, device=x.device) - 1)
    return x * scale + shift


POLICIES = {  # train.augment: what labeled batches (and FixMatch's weak view) go through
    "none": lambda x: x,
    "crop": translate,                        # safe for digits, whose mirror image is another digit
    "flip_crop": lambda x: translate(flip(x)),  # clothes and objects look the same mirrored
}


def strong(x: torch.Tensor, weak) -> torch.Tensor:
    """FixMatch's strong view: the weak policy, then cutout and brightness/contrast jitter."""
    return cutout(jitter(weak(x)))
