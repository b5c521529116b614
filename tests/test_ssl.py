"""Semi-supervised objectives and the batched augmentations they use."""
from pathlib import Path

import pytest
import torch

from fewlabels import augment, engine, registry
from fewlabels.data import FitInputs, mask_labels
from fewlabels.engine import fit
from fewlabels.params import SSLConfig, TrainConfig
from fewlabels.errors import ParamError
from fewlabels.methods.base import Run
from fewlabels.params import read, validate
from test_engine import separable, tiny_model

N = 60


def weights_after_unlabeled_only(method: str, **ssl_settings) -> tuple[dict, dict]:
    """Fit one epoch where every image is unlabeled; return the weights before and after."""
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = separable(N)
    vx, vy = separable(20, seed=1)
    cfg = TrainConfig(epochs=1, batch_size=20, device="cpu", lr=1e-2, ema=0.9 if method == "mean_teacher" else 0.0)
    # threshold 0: every prediction counts as confident; no warm-up, so epoch 1 already uses them; with no
    # labeled batch to count unlabeled ones against, unlabeled_ratio null keeps them all.
    ssl = SSLConfig(**{"method": method, "threshold": 0.0, "warmup_epochs": 0, "unlabeled_ratio": None, **ssl_settings})
    result = fit(model, FitInputs(x, mask_labels(y, []), [], list(range(N)), vx, vy), cfg, 0, ssl)
    return before, result["state_dict"]


@pytest.mark.parametrize("method, settings, changes", [
    # label_propagation spreads labels: with none there is nothing to spread
    *[(name, {}, spec.learns and name != "label_propagation") for name, spec in registry.METHODS.items()],
    ("mean_teacher", {"strong": "randaugment"}, True),
    ("fixmatch", {"dist_align": True, "strong": "randaugment"}, True),
    ("flexmatch", {"dist_align": True, "strong": "randaugment"}, True),
    ("freematch", {"strong": "randaugment", "stats_ema": 0.9}, True),
])
def test_unlabeled_batches_train_only_under_an_ssl_method(method, settings, changes):
    before, after = weights_after_unlabeled_only(method, **settings)
    assert changed(before, after) == changes


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("method, trains", [("fixmatch", False), ("flexmatch", True), ("freematch", True)])
def test_adaptive_thresholds_train_where_the_fixed_one_would_not(method, trains):
    """At ssl.threshold 1 FixMatch learns nothing from an untrained model; FlexMatch's thresholds start at 0 (no
    image selected yet) and FreeMatch's near 1/C, so both learn from the first batch."""
    assert changed(*weights_after_unlabeled_only(method, threshold=1.0)) == trains


def views(weak="crop", strong="affine_jitter_cutout") -> augment.Views:
    """The augmentations a run with these settings uses (normalisation mean 0.3, std 0.35 on the [0, 1] scale)."""
    policy = registry.AUGMENTS[weak]
    return augment.Views(policy, registry.STRONG_VIEWS[strong](policy, torch.full((1, 1, 1, 1), 0.3),
                                                         torch.full((1, 1, 1, 1), 0.35)), augment.TEACHER[weak])


def test_every_augment_policy_has_a_teacher_view():
    assert set(augment.TEACHER) == set(registry.AUGMENTS)


def test_the_teacher_view_is_the_weak_policy_without_cutout():
    """A bright image in a 3-pixel black frame: flip and a shift of up to 2 pixels keep its centre bright; a
    cutout square (8 x 8, anywhere) darkens the centre of some of 64 images. The teacher's view never does."""
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[..., 3:25, 3:25] = 1.0
    centre = (slice(None), slice(None), slice(5, 23), slice(5, 23))
    assert bool((augment.TEACHER["flip_crop_cutout"](x)[centre] == 1).all())
    assert not bool((registry.AUGMENTS["flip_crop_cutout"](x)[centre] == 1).all())


@pytest.mark.parametrize("name", ["fixmatch", "flexmatch", "freematch", "mean_teacher"])
def test_pseudo_labels_are_computed_without_dropout(name):
    """The teacher (here the model itself, in train mode as during an epoch) predicts with its dropout off, so
    its pseudo-labels are the dropout-free model's; the student's strong view still trains with dropout, and the
    model leaves the loss in train mode."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10), torch.nn.Dropout(0.9)).train()
    x = torch.randn(8, 1, 4, 4)
    plain = augment.Views(augment.none, augment.none, augment.none)
    m = method(name, threshold=0.0)
    m.loss(model, x, plain, model, INDEX)
    assert m.pseudo_labels()[0].tolist() == model.eval()(x).argmax(1).tolist()
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout at 0.9 does change the answers in train mode
    assert all(layer.training for layer in model.modules())


INDEX = torch.arange(8)  # positions of the 8 images the objectives below get


def method(name: str, **ssl_settings):
    """The method `name` of a run whose 8 training images are all unlabeled, with 10 classes."""
    return engine.build_method(SSLConfig(method=name, **ssl_settings), Run(10, INDEX.numpy(), 8, torch.device("cpu"),
                                                                torch.full((8,), -1)))


@pytest.mark.parametrize("threshold, trains", [(0.0, True), (1.0, False)])
def test_threshold_masks_unconfident_predictions(threshold, trains):
    """At threshold 1 only certainty counts, which an untrained model never has: the loss is exactly zero."""
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.randn(8, 1, 16, 16)
    loss = method("fixmatch", threshold=threshold).loss(model, x, views(), model, INDEX)
    assert (loss.item() > 0) == trains


def test_fixmatch_takes_its_targets_from_the_teacher():
    """The strong view is trained towards the teacher's class, not the student's own prediction."""
    student = tiny_model().eval()  # eval: no dropout, so the strong view is the only randomness
    x = torch.randn(8, 1, 16, 16)

    class teacher_of(torch.nn.Module):  # sure of class `cls` for every image
        def __init__(self, cls):
            super().__init__()
            self.cls = cls

        def forward(self, images):
            return torch.nn.functional.one_hot(torch.full((len(images),), self.cls), 10).float() * 50

    def loss_towards(cls):
        torch.manual_seed(1)
        return method("fixmatch", threshold=0.99).loss(student, x, views("none"), teacher_of(cls), INDEX)

    torch.manual_seed(1)
    expected = torch.nn.functional.cross_entropy(student(augment.strong(x, registry.AUGMENTS["none"])),
                                                 torch.full((8,), 3))
    assert loss_towards(3).item() == pytest.approx(expected.item())
    assert loss_towards(5).item() != pytest.approx(expected.item())


def test_mean_teacher_loss_is_zero_when_student_and_teacher_agree_on_any_view():
    """A model that ignores its input predicts the same on the weak and strong views: nothing to learn."""
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))
    with torch.no_grad():
        constant[1].weight.zero_()
    x = torch.randn(8, 1, 16, 16)
    mean_teacher = method("mean_teacher")
    assert mean_teacher.loss(constant, x, views(), constant, INDEX).item() == 0.0
    other = tiny_model()
    assert mean_teacher.loss(constant, x, views(), other, INDEX).item() > 0


def test_mean_teacher_without_a_weight_average_is_an_error():
    x, y = separable(20)
    with pytest.raises(ParamError, match="train.ema"):
        fit(tiny_model(), FitInputs(x, mask_labels(y, []), [], list(range(20)), x, y), TrainConfig(device="cpu"), 0,
            SSLConfig(method="mean_teacher"))


def test_one_optimizer_step_per_labeled_batch(monkeypatch):
    """Unlabeled gradients join the next labeled batch's step; trailing ones get a step of their own."""
    steps, kinds = [], []
    collate = engine.collate_pure

    def recording_collate(fetched):
        batch = collate(fetched)
        kinds.append(batch.labeled)
        return batch

    monkeypatch.setattr(engine, "collate_pure", recording_collate)
    monkeypatch.setattr(engine, "_step", lambda *args: steps.append(len(kinds)))  # batches seen at each step
    x, y = separable(N)
    labeled = list(range(0, N, 3))
    cfg = TrainConfig(epochs=1, batch_size=5, device="cpu", scheduler="none")
    fit(tiny_model(), FitInputs(x, mask_labels(y, labeled), labeled, sorted(set(range(N)) - set(labeled)), x, y), cfg, 0,
        SSLConfig(method="fixmatch", threshold=0.0, warmup_epochs=0))
    expected = [i + 1 for i, labeled_batch in enumerate(kinds) if labeled_batch]
    if not kinds[-1]:
        expected.append(len(kinds))
    assert steps == expected and kinds.count(False) > kinds.count(True) > 1


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


def normalised_dots(n=64, size=12, mean=0.286, std=0.353):
    """dot_images on a black background, normalised as a run normalises Fashion-MNIST (its mean and std)."""
    return (dot_images(n, size) - mean) / std, ((torch.zeros(()) - mean) / std).item()  # and black, normalised


def test_translate_pads_with_the_normalised_background_not_grey():
    torch.manual_seed(0)
    x, black = normalised_dots()
    out = augment.translate(x, pixels=2)
    bright = out == out.max()
    assert bright.sum() == 64  # each dot whole, nothing else bright
    assert torch.equal(out[~bright], torch.full_like(out[~bright], black))  # shifted-in borders black, none 0


def test_cutout_hides_one_square_per_image_under_the_background():
    torch.manual_seed(0)
    x = torch.rand(32, 2, 28, 28) + 1
    x[:, 1] -= 3  # a second channel with another background
    out = augment.cutout(x, size=8)
    hidden = out != x
    background = x.amin((2, 3), keepdim=True).expand_as(x)
    assert torch.equal(out[hidden], background[hidden])
    per_image = hidden.sum((2, 3))
    assert (per_image > 0).all() and (per_image <= 9 * 9).all()  # odd-sized window of side size + 1, clipped


def test_affine_with_no_range_is_the_identity():
    x = torch.randn(4, 1, 12, 12)
    assert torch.allclose(augment.affine(x, degrees=0, shear=0, scale=0), x, atol=1e-5)


def test_affine_rotates_each_image_by_its_own_angle():
    torch.manual_seed(0)
    out = augment.affine(dot_images(n=64, size=28, at=(4, 14)), degrees=90, shear=0, scale=0)
    rows = out[:, 0].sum(2).argmax(1)  # where each image's dot went (rotated about the centre)
    assert len(set(rows.tolist())) > 5 and (out.sum((1, 2, 3)) > 0.5).all()  # spread out, not lost


def test_strong_view_differs_from_weak_view():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    assert not torch.equal(augment.strong(x, registry.AUGMENTS["none"]), x)


# params -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("method", "mixmatch"), ("threshold", 1.5), ("weight", -1),
                                        ("warmup_epochs", 0.5), ("unlabeled_ratio", 0), ("strong", "autoaugment"),
                                        ("dist_align", "yes"), ("stats_ema", 1.0), ("fairness_weight", -0.1),
                                        ("ema_teacher", 1)])
def test_bad_ssl_params_name_the_key(key, value):
    params = repo_params()
    params["ssl"][key] = value
    with pytest.raises(ParamError, match=f"ssl.{key}"):
        validate(params)


def repo_params() -> dict:
    return read(Path(__file__).parents[1] / "params.yaml")


def test_mean_teacher_params_need_train_ema():
    params = repo_params()
    params["ssl"]["method"], params["train"]["ema"] = "mean_teacher", 0.0
    with pytest.raises(ParamError, match="train.ema"):
        validate(params)
    params["train"]["ema"] = 0.99
    assert validate(params).ssl.method == "mean_teacher"


@pytest.mark.parametrize("settings, message", [
    ({"ssl.method": "freematch", "ssl.dist_align": True},
     "ssl.dist_align works with ssl.method fixmatch or flexmatch, not freematch: set ssl.dist_align to false"),
    ({"ssl.method": "mean_teacher", "train.ema": 0.99, "ssl.ema_teacher": False},
     "ssl.method mean_teacher learns from the weight average: set ssl.ema_teacher to true"),
    ({"train.optimizer": "sgd", "train.momentum": 0.0, "train.nesterov": True},
     "train.nesterov needs train.optimizer sgd and train.momentum above 0"),
])
def test_contradicting_settings_are_one_line_naming_the_key(settings, message):
    params = repo_params()
    for key, value in settings.items():
        section, name = key.split(".")
        params[section][name] = value
    with pytest.raises(ParamError, match=f"^params.yaml: {message}$"):
        validate(params)


def test_the_published_fixmatch_recipe_validates():
    params = repo_params()
    params["train"].update(optimizer="sgd", nesterov=True, lr=0.03, scheduler="cosine", weight_decay=5e-4, ema=0.999)
    params["ssl"].update(method="flexmatch", dist_align=True, strong="randaugment", unlabeled_ratio=7.0,
                         ema_teacher=False, warmup_epochs=0)
    p = validate(params)
    assert p.train.nesterov and p.ssl.dist_align and p.ssl.strong == "randaugment"
