"""Semi-supervised objectives and the batched augmentations they use."""
from pathlib import Path

import pytest
import torch
import yaml

from fewlabels import augment, engine
from fewlabels.data import mask_labels
from fewlabels.engine import SSLConfig, TrainConfig, fit
from fewlabels.params import ParamError, validate
from test_engine import separable, tiny_model

N = 60


def weights_after_unlabeled_only(method: str) -> tuple[dict, dict]:
    """Fit one epoch where every image is unlabeled; return the weights before and after."""
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = separable(N)
    vx, vy = separable(20, seed=1)
    cfg = TrainConfig(epochs=1, batch_size=20, device="cpu", lr=1e-2)
    # threshold 0: every prediction counts as confident; no warm-up, so epoch 1 already uses them.
    ssl = SSLConfig(method=method, threshold=0.0, warmup_epochs=0)
    result = fit(model, x, mask_labels(y, []), [], list(range(N)), vx, vy, cfg, 0, ssl)
    return before, result["state_dict"]


@pytest.mark.parametrize("method, changes", [("skip", False), ("pseudo_label", True), ("fixmatch", True)])
def test_unlabeled_batches_train_only_under_an_ssl_method(method, changes):
    before, after = weights_after_unlabeled_only(method)
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert changed == changes


@pytest.mark.parametrize("threshold, trains", [(0.0, True), (1.01, False)])
def test_threshold_masks_unconfident_predictions(threshold, trains):
    """Above every possible confidence nothing is a pseudo-label: the loss is exactly zero."""
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.randn(8, 1, 16, 16)
    loss = engine.fixmatch(model, x, SSLConfig(threshold=threshold), augment.POLICIES["crop"])
    assert (loss.item() > 0) == trains


@pytest.mark.parametrize("warmup, epoch, weight", [(0, 1, 2.0), (2, 1, 0.0), (2, 2, 1.0), (2, 3, 2.0), (2, 9, 2.0)])
def test_unlabeled_weight_ramps_over_warmup(warmup, epoch, weight):
    assert engine.ramp(SSLConfig(weight=2.0, warmup_epochs=warmup), epoch) == pytest.approx(weight)


# augmentations ----------------------------------------------------------------------------------

def dot_images(n=64, size=12, at=(5, 6)):
    x = torch.zeros(n, 1, size, size)
    x[:, 0, at[0], at[1]] = 1.0
    return x


def test_translate_moves_each_image_by_at_most_the_padding():
    torch.manual_seed(0)
    out = augment.translate(dot_images(), pixels=2)
    assert out.shape == (64, 1, 12, 12)
    positions = {tuple(torch.nonzero(img[0])[0].tolist()) for img in out}
    assert all(abs(r - 5) <= 2 and abs(c - 6) <= 2 for r, c in positions)
    assert len(positions) > 10  # images moved independently, not as one batch
    assert torch.equal(out.sum((1, 2, 3)), torch.ones(64))  # the dot stays whole (it is 2 px from every edge)


def test_flip_mirrors_about_half_the_batch_exactly():
    torch.manual_seed(0)
    x = dot_images(n=200)
    out = augment.flip(x)
    mirrored = out[:, 0, 5, 12 - 1 - 6] == 1
    assert torch.equal(out[mirrored], x[mirrored].flip(3))
    assert torch.equal(out[~mirrored], x[~mirrored])
    assert 60 < mirrored.sum() < 140


def test_cutout_zeroes_one_square_per_image():
    torch.manual_seed(0)
    out = augment.cutout(torch.ones(32, 1, 28, 28), size=8)
    zeroed = (out == 0).sum((1, 2, 3))
    assert (zeroed > 0).all() and (zeroed <= 9 * 9).all()  # odd-sized window of side size + 1, clipped at borders


def test_strong_view_differs_from_weak_view():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    assert not torch.equal(augment.strong(x, augment.POLICIES["none"]), x)


# params -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("method", "mixmatch"), ("threshold", 1.5), ("weight", -1),
                                        ("warmup_epochs", 0.5), ("unlabeled_ratio", 0)])
def test_bad_ssl_params_name_the_key(key, value):
    with open(Path(__file__).parents[1] / "params.yaml") as f:
        params = yaml.safe_load(f)
    params["ssl"][key] = value
    with pytest.raises(ParamError, match=f"ssl.{key}"):
        validate(params)
