"""Batched tensor augmentations: whole batches at once on the training device, no per-sample PIL.

All policies take normalised float images [B, C, H, W] and return a new tensor of the same shape; the
RandAugment ops in between work on the pixel scale [0, 1] (RandAugment converts there and back).
Shifted-in borders and cutout squares take each image's darkest value per channel, not 0: after
normalisation 0 is the mean, a grey, and these images' background is black (the darkest value: exactly the
normalised black on Fashion-MNIST and MNIST, whose every image has black pixels).
"""
import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


def flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the images left-right."""
    mask = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def background(x: torch.Tensor) -> torch.Tensor:
    """Each image's darkest value per channel [B, C, 1, 1]: what borders and cutout squares are filled with."""
    return x.amin((2, 3), keepdim=True)


def translate(x: torch.Tensor, pixels: int = 2) -> torch.Tensor:
    """Shift each image by up to `pixels` in each direction (background fill), one gather for the batch."""
    b, c, h, w = x.shape
    padded = background(x).expand(b, c, h + 2 * pixels, w + 2 * pixels).clone()
    padded[..., pixels:pixels + h, pixels:pixels + w] = x
    dy = torch.randint(0, 2 * pixels + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * pixels + 1, (b, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channels, rows, cols]


def cutout(x: torch.Tensor, size: int = 8) -> torch.Tensor:
    """Hide one random size x size square per image (clipped at the borders) under its background."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return torch.where(inside, background(x), x)


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


# train.augment (fewlabels.registry.AUGMENTS): what labeled batches (and FixMatch's weak view) go through

def none(x: torch.Tensor) -> torch.Tensor:
    return x


crop = translate  # safe for digits, whose mirror image is another digit


def flip_crop(x: torch.Tensor) -> torch.Tensor:
    return translate(flip(x))  # clothes and objects look the same mirrored


def flip_crop_cutout(x: torch.Tensor) -> torch.Tensor:
    return cutout(translate(flip(x)))  # and an 8x8 square hidden (random erasing)


def strong(x: torch.Tensor, weak) -> torch.Tensor:
    """The strong view (FixMatch, mean teacher): the weak policy, then a random rotation, shear and zoom,
    brightness/contrast jitter and cutout."""
    return cutout(jitter(affine(weak(x))))


# RandAugment for grayscale images ----------------------------------------------------------------
# USB's RandAugment without its colour ops (semilearn/datasets/augmentation/randaugment.py: augment_list_no_color,
# what USB's grayscale MedMNIST sets use), then its Cutout. Every image draws its own ops and magnitudes, but the
# work is done per batch: each op runs on the whole batch and an image keeps the result of the op it drew; the
# geometric ops an image drew in one round become one affine matrix, so one grid_sample warps the batch.
# Geometric ops map output pixel coordinates to input ones as PIL's transforms do (origin at the top-left
# corner, x right, y down; magnitudes in PIL's units), sample bilinearly and fill with black as PIL does.


def _matrix(v: torch.Tensor, *entries) -> torch.Tensor:
    """[B, 2, 3] affine matrices [[a, b, c], [d, e, f]] from entries that are numbers or tensors shaped like v [B]."""
    return torch.stack([e if torch.is_tensor(e) else torch.full_like(v, e) for e in entries], 1).view(-1, 2, 3)


def _rotate(v, h, w):
    """v degrees counter-clockwise about the image centre (PIL's Image.rotate)."""
    cos, sin = torch.cos(torch.deg2rad(v)), torch.sin(torch.deg2rad(v))
    cx, cy = w / 2, h / 2
    return _matrix(v, cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)


def _brightness(p, v):
    """PIL's ImageEnhance.Brightness: blend towards black, v = 1 keeps the image."""
    return (p * v.view(-1, 1, 1, 1)).clamp(0, 1)


def _sharpness(p, v):
    """PIL's ImageEnhance.Sharpness: blend towards the smoothed image (torchvision's, borders kept); v = 1 keeps it."""
    from torchvision.transforms.v2.functional import adjust_sharpness  # ~2.5 s to import: paid by runs that use it

    smooth = adjust_sharpness(p, 0.0)  # factor 0: the smoothed image itself
    return (smooth + v.view(-1, 1, 1, 1) * (p - smooth)).clamp(0, 1)


def _equalize(p, v):
    """PIL's ImageOps.equalize of each image's own histogram (torchvision's batched, PIL-exact version)."""
    from torchvision.transforms.v2.functional import equalize  # ~2.5 s to import: paid by runs that use it

    return equalize(p)


class Op(NamedTuple):
    fn: Callable      # geometric: (magnitudes [B], h, w) -> [B, 2, 3] matrices; else (pixels, magnitudes [B]) -> pixels
    low: float        # magnitudes are drawn uniformly from [low, high]
    high: float
    geometric: bool


GRAY_OPS = {  # USB's augment_list_no_color, in its order, with its magnitude ranges
    "brightness": Op(_brightness, 0.05, 0.95, False),
    "equalize": Op(_equalize, 0, 1, False),
    "identity": Op(lambda p, v: p, 0, 1, False),
    "rotate": Op(_rotate, -30, 30, True),                                                     # degrees
    "sharpness": Op(_sharpness, 0.05, 0.95, False),
    "shear_x": Op(lambda v, h, w: _matrix(v, 1, v, 0, 0, 1, 0), -0.3, 0.3, True),            # x + v y
    "shear_y": Op(lambda v, h, w: _matrix(v, 1, 0, 0, v, 1, 0), -0.3, 0.3, True),            # y + v x
    "translate_x": Op(lambda v, h, w: _matrix(v, 1, 0, v * w, 0, 1, 0), -0.3, 0.3, True),    # fraction of the width
    "translate_y": Op(lambda v, h, w: _matrix(v, 1, 0, 0, 0, 1, v * h), -0.3, 0.3, True),    # fraction of the height
}


def warp(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Each image resampled at m @ (x, y, 1) for its output pixel (x, y) (pixel units, [B, 2, 3]); black outside."""
    h, w = p.shape[-2:]
    (a, b, c), (d, e, f) = m[:, 0].unbind(1), m[:, 1].unbind(1)
    # the same map in affine_grid's coordinates, which run from -1 to 1 across the image: u = 2 x / w - 1
    theta = torch.stack([a, b * h / w, a + b * h / w + 2 * c / w - 1,
                         d * w / h, e, d * w / h + e + 2 * f / h - 1], 1).view(-1, 2, 3)
    grid = F.affine_grid(theta, list(p.shape), align_corners=False)
    return F.grid_sample(p, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_op(p: torch.Tensor, name: str, v: torch.Tensor) -> torch.Tensor:
    """GRAY_OPS[name] on every image of a batch of pixels [B, C, H, W] in [0, 1], at per-image magnitudes v [B]."""
    op = GRAY_OPS[name]
    return warp(p, op.fn(v, *p.shape[-2:])) if op.geometric else op.fn(p, v)


def random_ops(p: torch.Tensor, ops: dict[str, Op] = GRAY_OPS) -> torch.Tensor:
    """One op per image, drawn uniformly from `ops`, at a magnitude drawn uniformly from that op's range."""
    b, _, h, w = p.shape
    pick = torch.randint(len(ops), (b,), device=p.device)
    u = torch.rand(b, device=p.device)
    out, moved = p, torch.zeros(b, dtype=torch.bool, device=p.device)
    m = _matrix(u, 1, 0, 0, 0, 1, 0)  # identity
    for i, op in enumerate(ops.values()):
        chosen, v = pick == i, op.low + (op.high - op.low) * u
        if op.geometric:
            m, moved = torch.where(chosen.view(-1, 1, 1), op.fn(v, h, w), m), moved | chosen
        else:
            out = torch.where(chosen.view(-1, 1, 1, 1), op.fn(p, v), out)
    return torch.where(moved.view(-1, 1, 1, 1), warp(p, m), out)


def grey_cutout(p: torch.Tensor, max_frac: float = 0.5, grey: float = 0.5) -> torch.Tensor:
    """USB's Cutout: one square per image of side uniform in [0, max_frac x width] pixels, centred anywhere in the
    image (clipped at its borders), filled with grey (pixel scale [0, 1])."""
    b, _, h, w = p.shape
    side = torch.rand(b, 1, 1, 1, device=p.device) * max_frac * w
    cy, cx = (torch.rand(b, 1, 1, 1, device=p.device) * n for n in (h, w))
    ys = torch.arange(h, device=p.device).view(1, 1, h, 1) + 0.5  # pixel centres
    xs = torch.arange(w, device=p.device).view(1, 1, 1, w) + 0.5
    return p.masked_fill(((ys - cy).abs() < side / 2) & ((xs - cx).abs() < side / 2), grey)


class RandAugment:
    """The strong view: the weak policy (so clothes are mirrored left-right only, never upside down), then
    `n` random ops per image (USB: 3), then grey cutout of up to `cutout` of the width (USB: half).

    mean, std: the run's normalisation on the pixel scale [0, 1], shaped [1, C, 1, 1] on the device.
    """

    def __init__(self, weak, mean: torch.Tensor, std: torch.Tensor, n: int = 3, ops: dict[str, Op] = GRAY_OPS,
                 cutout: float = 0.5):
        self.weak, self.mean, self.std, self.n, self.ops, self.cutout = weak, mean, std, n, ops, cutout

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # float32 whatever the run's autocast: bf16 would round the smoothing (a conv2d) and move what equalize sees
        with torch.autocast(x.device.type, enabled=False):
            p = (self.weak(x) * self.std + self.mean).clamp(0, 1)
            for _ in range(self.n):
                p = random_ops(p, self.ops)
            return (grey_cutout(p, self.cutout) - self.mean) / self.std


# The teacher's view of unlabeled images for each train.augment policy: the policy without its cutout (FixMatch's
# weak view is flip and shift only; a hidden square makes a pseudo-label noisier and teaches the teacher nothing).
TEACHER = {"none": none, "crop": crop, "flip_crop": flip_crop, "flip_crop_cutout": flip_crop}


class Views(NamedTuple):
    """A run's augmentations of normalised images: weak (labeled batches, and pseudo-labelling's and label
    propagation's unlabeled ones), strong (the student's view of unlabeled ones) and teacher (the weak policy
    without cutout: what a teacher predicts pseudo-labels on)."""
    weak: Callable
    strong: Callable
    teacher: Callable


# ssl.strong (fewlabels.registry.STRONG_VIEWS): (weak policy, normalisation mean and std on the [0, 1] scale)
# -> the strong view

def affine_jitter_cutout(weak, mean: torch.Tensor, std: torch.Tensor) -> Callable:
    return lambda x: strong(x, weak)


randaugment = RandAugment
