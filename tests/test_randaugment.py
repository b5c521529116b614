"""RandAugment for grayscale clothing (fewlabels.augment): each op on known inputs, per-image draws, the strong view."""
import contextlib

import pytest
import torch

from fewlabels import augment, registry
from fewlabels.augment import GRAY_OPS, apply_op, grey_cutout, random_ops

SIZE = 28
IDENTITY = {"brightness": 1.0, "identity": 0.5, "rotate": 0.0, "sharpness": 1.0, "shear_x": 0.0, "shear_y": 0.0,
            "translate_x": 0.0, "translate_y": 0.0}  # the magnitude at which each op keeps the image (not equalize)


def pixels(n=8, seed=0):
    """Random images on the pixel scale [0, 1], [n, 1, SIZE, SIZE]."""
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def dot(row, col, n=1):
    x = torch.zeros(n, 1, SIZE, SIZE)
    x[:, 0, row, col] = 1.0
    return x


def where_is(img) -> tuple[int, int]:
    return tuple(torch.nonzero(img[0] > 0.5)[0].tolist())


def at(v, n=1):
    return torch.full((n,), float(v))


# each op on its own ---------------------------------------------------------------------------------

def test_the_op_list_is_usbs_grayscale_list():
    """USB's augment_list_no_color: no colour ops, no vertical flip (clothes are not worn upside down)."""
    assert list(GRAY_OPS) == ["brightness", "equalize", "identity", "rotate", "sharpness", "shear_x", "shear_y",
                              "translate_x", "translate_y"]
    assert {name: (op.low, op.high) for name, op in GRAY_OPS.items() if name in ("rotate", "shear_x", "brightness")} \
        == {"rotate": (-30, 30), "shear_x": (-0.3, 0.3), "brightness": (0.05, 0.95)}


@pytest.mark.parametrize("name", IDENTITY)
def test_identity_magnitude_keeps_the_image(name):
    p = pixels()
    assert torch.allclose(apply_op(p, name, at(IDENTITY[name], len(p))), p, atol=1e-5)


@pytest.mark.parametrize("name", GRAY_OPS)
@pytest.mark.parametrize("end", ["low", "high"])
def test_every_op_keeps_shape_and_pixel_range(name, end):
    p = pixels()
    out = apply_op(p, name, at(getattr(GRAY_OPS[name], end), len(p)))
    assert out.shape == p.shape and out.dtype == p.dtype and 0 <= out.min() and out.max() <= 1


def test_rotate_turns_counter_clockwise_about_the_centre():
    out = apply_op(dot(3, 20), "rotate", at(90))
    assert torch.allclose(out[0, 0], torch.rot90(dot(3, 20)[0, 0], 1), atol=1e-5)


def test_translate_moves_content_by_a_fraction_of_the_size_and_fills_black():
    """PIL's translate: the output pixel (x, y) shows the input at (x + v w, y), so positive v moves content left."""
    assert where_is(apply_op(dot(5, 20), "translate_x", at(3 / SIZE))[0]) == (5, 17)
    assert where_is(apply_op(dot(5, 20), "translate_y", at(-4 / SIZE))[0]) == (9, 20)
    out = apply_op(torch.ones(1, 1, SIZE, SIZE), "translate_x", at(0.25))  # 7 px
    assert torch.all(out[..., -7:] == 0) and torch.allclose(out[..., :-7], torch.ones(1, 1, SIZE, SIZE - 7))


def test_shear_is_about_the_top_left_corner_as_in_pil():
    """Row y (centre y + 0.5) shifts by v (y + 0.5) pixels: the top row barely moves, the bottom one most."""
    v = 4 / (SIZE - 0.5)  # the bottom row's centre (27.5) shifts 4 px exactly
    assert where_is(apply_op(dot(SIZE - 1, 14), "shear_x", at(v))[0]) == (SIZE - 1, 10)
    top = apply_op(dot(0, 14), "shear_x", at(v))[0, 0, 0]
    assert top[14] > 0.9  # shifted by v / 2 ~ 0.07 px
    assert where_is(apply_op(dot(14, SIZE - 1), "shear_y", at(v))[0]) == (10, SIZE - 1)


def test_brightness_blends_towards_black():
    p = pixels(3)
    assert torch.allclose(apply_op(p, "brightness", torch.tensor([0.05, 0.5, 0.95])),
                          p * torch.tensor([0.05, 0.5, 0.95]).view(3, 1, 1, 1))


def test_sharpness_blends_towards_the_smoothed_image():
    from torchvision.transforms.v2.functional import adjust_sharpness

    p = pixels(2)
    smooth = adjust_sharpness(p, 0.0)
    assert torch.allclose(apply_op(p, "sharpness", at(0.0, 2)), smooth)
    assert torch.allclose(apply_op(p, "sharpness", at(0.5, 2)), (p + smooth) / 2, atol=1e-6)
    flat = torch.full((1, 1, SIZE, SIZE), 0.4)
    assert torch.allclose(apply_op(flat, "sharpness", at(0.05)), flat)  # nothing to smooth


def test_equalize_uses_each_images_own_histogram():
    dim = pixels(1) * 0.25                   # values in [0, 0.25]
    bright = pixels(1, seed=1) * 0.2 + 0.8   # values in [0.8, 1]
    out = apply_op(torch.cat([dim, bright]), "equalize", at(0.5, 2))
    assert out[0].max() == 1 and out[0].min() < 0.01 and out[1].min() < 0.01  # each stretched over the full range
    assert torch.equal(out[0], apply_op(dim, "equalize", at(0.5))[0])          # the other image changes nothing


# drawing ops per image -----------------------------------------------------------------------------

def test_each_image_draws_its_own_magnitude():
    torch.manual_seed(0)
    p = pixels(1).expand(64, -1, -1, -1) * 0.5 + 0.25
    out = random_ops(p, {"brightness": GRAY_OPS["brightness"]})
    ratio = (out / p).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one factor per image ...
    factors = ratio[:, 0]
    assert 0.05 <= factors.min() and factors.max() <= 0.95 and factors.std() > 0.15  # ... drawn per image


def test_each_image_draws_its_own_op_and_gets_only_that_one():
    torch.manual_seed(0)
    p = dot(14, 14, n=200) * 0.8
    out = random_ops(p, {"brightness": GRAY_OPS["brightness"], "translate_x": GRAY_OPS["translate_x"]})
    moved = out[:, 0, 14, 14] < 0.01 * 0.8  # the dot left its place: translated (by more than a pixel), not dimmed
    dimmed = torch.isclose(out.sum((1, 2, 3)), out[:, 0, 14, 14]) & ~moved
    assert 60 < moved.sum() < 140 and 60 < dimmed.sum() < 140  # about half each
    assert torch.all(out[dimmed, 0, 14, 14] < 0.8 * 0.951)     # dimmed images stayed in place


def test_geometric_draws_land_within_their_range():
    torch.manual_seed(0)
    out = random_ops(dot(14, 14, n=100), {"translate_x": GRAY_OPS["translate_x"]})
    cols = (out[:, 0, 14] * torch.arange(SIZE)).sum(1) / out[:, 0, 14].sum(1).clamp_min(1e-6)  # the dot's column
    kept = out.sum((1, 2, 3)) > 0.5  # dots moved within the image
    assert torch.all((cols[kept] - 14).abs() <= 0.3 * SIZE + 0.5) and len(set(cols.round().tolist())) > 10


def test_grey_cutout_fills_one_square_of_up_to_half_the_width_with_grey():
    torch.manual_seed(0)
    out = grey_cutout(torch.zeros(500, 1, SIZE, SIZE), max_frac=0.5, grey=0.5)
    assert set(out.unique().tolist()) <= {0.0, 0.5}
    area = (out == 0.5).sum((1, 2, 3))
    rows = (out == 0.5).any(3).sum((1, 2))
    assert area.max() <= (SIZE // 2) ** 2 and rows.max() <= SIZE // 2
    assert area.max() > 100 and (area == 0).sum() < 100  # sizes vary; small ones may hide nothing
    assert torch.equal(grey_cutout(out, max_frac=0.0), out)


# the strong view ------------------------------------------------------------------------------------

MEAN, STD = torch.full((1, 1, 1, 1), 0.29), torch.full((1, 1, 1, 1), 0.35)  # normalisation on the [0, 1] scale


def normalised(p):
    return (p - MEAN) / STD


def test_randaugment_keeps_shape_and_the_pixel_range_and_draws_per_image():
    torch.manual_seed(0)
    x = normalised(pixels(1).expand(32, -1, -1, -1))
    out = augment.RandAugment(registry.AUGMENTS["flip_crop"], MEAN, STD)(x)
    assert out.shape == x.shape
    p = out * STD + MEAN
    assert p.min() >= -1e-6 and p.max() <= 1 + 1e-6
    assert len({img.sum().item() for img in out}) == 32  # every copy of the image got its own view


@pytest.mark.parametrize("context", [
    contextlib.nullcontext,  # deterministic from the seed
    # computes in float32 under autocast: the training step runs under bf16 autocast on a GPU; CPU autocast
    # stands in for it here
    lambda: torch.autocast("cpu", dtype=torch.bfloat16),
], ids=["plain", "bf16-autocast"])
def test_randaugment_gives_the_same_views_from_the_same_seed(context):
    ra = augment.RandAugment(registry.AUGMENTS["flip_crop"], MEAN, STD)
    x = normalised(pixels(32))
    torch.manual_seed(4)
    expected = ra(x)
    torch.manual_seed(4)
    with context():
        assert torch.equal(ra(x), expected)


def test_randaugment_of_identity_ops_is_the_weak_view_mirrored_left_right_only():
    """The strong view's only flip is the weak policy's: left-right, never upside down."""
    torch.manual_seed(0)
    x = normalised(pixels(64))
    ra = augment.RandAugment(augment.flip, MEAN, STD, ops={"identity": GRAY_OPS["identity"]}, cutout=0.0)
    out = ra(x)
    mirrored = torch.tensor([torch.allclose(o, i.flip(2), atol=1e-5) for o, i in zip(out, x)])  # [C, H, W]: W
    same = torch.tensor([torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)])
    assert torch.all(mirrored ^ same) and 15 < mirrored.sum() < 49


def test_the_default_strong_view_is_todays():
    """ssl.strong affine_jitter_cutout draws exactly what augment.strong did, so earlier results reproduce."""
    x = normalised(pixels(16))
    weak = registry.AUGMENTS["flip_crop"]
    torch.manual_seed(5)
    expected = augment.strong(x, weak)
    torch.manual_seed(5)
    assert torch.equal(registry.STRONG_VIEWS["affine_jitter_cutout"](weak, MEAN, STD)(x), expected)
