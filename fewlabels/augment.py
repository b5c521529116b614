"""Batched tensor augmentations: whole batches at once on the training device, no per-sample PIL.

All functions take normalised float images [B, C, H, W] and return a new tensor of the same shape.
"""
import math

import torch
import torch.nn.functional as F


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


def affine(x: torch.Tensor, degrees: float = 20.0, shear: float = 0.2, scale: float = 0.15) -> torch.Tensor:
    """Rotate (up to +-degrees), shear (up to +-shear) and zoom (1 +- scale) each image about its centre,
    one grid_sample for the batch; pixels from outside repeat the border (the background)."""
    b = len(x)
    u = lambda: 2 * torch.rand(b, device=x.device) - 1  # noqa: E731  uniform in [-1, 1] per image
    angle, s, k = u() * math.radians(degrees), u() * shear, 1 + u() * scale
    cos, sin = torch.cos(angle) / k, torch.sin(angle) / k
    theta = torch.stack([torch.stack([cos, -sin + s * cos, torch.zeros_like(cos)], 1),
                         torch.stack([sin, cos + s * sin, torch.zeros_like(cos)], 1)], 1)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


POLICIES = {  # train.augment: what labeled batches (and FixMatch's weak view) go through
    "none": lambda x: x,
    "crop": translate,                        # safe for digits, whose mirror image is another digit
    "flip_crop": lambda x: translate(flip(x)),  # clothes and objects look the same mirrored
    "flip_crop_cutout": lambda x: cutout(translate(flip(x))),  # and an 8x8 square hidden (random erasing)
}


def strong(x: torch.Tensor, weak) -> torch.Tensor:
    """The strong view (FixMatch, mean teacher): the weak policy, then a random rotation, shear and zoom,
    brightness/contrast jitter and cutout."""
    return cutout(jitter(affine(weak(x))))
