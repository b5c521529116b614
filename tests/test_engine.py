"""engine.fit and engine.predict on tiny synthetic data (CPU, seconds)."""
import copy
import math

import pytest
import torch
from torch import nn

from fewlabels import distributed, engine, inference, optim
from fewlabels.data import FitInputs
from fewlabels.engine import Hooks, fit
from fewlabels.inference import Normalize, device_type, predict, predict_trained, resolve_device
from fewlabels.errors import DeviceError, ParamError
from fewlabels.params import DistConfig, TrainConfig
from fewlabels.models import build_model

SIZE = 16  # the smallest images lenet takes; keeps every fit well under a second an epoch


def separable(n, seed=0):
    """uint8 images [n, 1, 16, 16] of noise plus one white 4x4 block whose position is the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randint(0, 60, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    for c in range(10):
        row, col = divmod(c, 4)
        x[y == c, 0, 4 * row:4 * row + 4, 4 * col:4 * col + 4] = 255
    return x, y


def tiny_model(seed=0):
    """About 2,000 weights with dropout (so train and eval mode differ): fast to fit."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(4 * 7 * 7, 10))


def run_fit(model=None, n=100, epochs=3, labeled=None, valid=None, seed=0, log_epoch=None, **cfg):
    x, y = separable(n)
    vx, vy = valid if valid is not None else separable(50, seed=1)
    labeled = range(n) if labeled is None else labeled
    unlabeled = sorted(set(range(n)) - set(labeled))
    # a constant rate, selection on valid_acc and float32, whatever params.yaml's recipe: what the tests below assume
    config = TrainConfig(**{"epochs": epochs, "batch_size": 20, "device": "cpu", "lr": 3e-3, "scheduler": "none",
                            "select_metric": "valid_acc", "cpu_bf16": False, **cfg})
    return fit(model or tiny_model(), FitInputs(x, y, list(labeled), unlabeled, vx, vy), config, seed,
               hooks=Hooks(log_epoch))


def scripted_validation(monkeypatch, losses, accs=None):
    """Make epoch e's validation report losses[e-1] (and accs[e-1]): early stopping and selection under control."""
    script = iter(zip(losses, accs or [0.5] * len(losses)))
    monkeypatch.setattr(engine, "loss_and_accuracy", lambda logits, labels: next(script))


# learning ---------------------------------------------------------------------------------------

def test_fit_learns_separable_data():
    torch.manual_seed(0)
    result = run_fit(build_model("lenet", 1, SIZE, 10), n=200, epochs=5)
    history = result["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5] and result["epochs_run"] == 5
    assert history[-1]["train_acc"] >= 0.95, history
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 5
    assert max(row["valid_acc"] for row in history) >= 0.95  # generalises to fresh images of the pattern
    assert result["device"] == "cpu" and result["train_seconds"] >= 0 and result["images_per_s"] >= 0


def test_returned_state_dict_reproduces_the_best_epochs_validation():
    vx, vy = separable(50, seed=1)
    result = run_fit(build_model("lenet", 1, SIZE, 10), epochs=4, valid=(vx, vy))
    logits = predict_trained(build_model("lenet", 1, SIZE, 10), result, vx, torch.device("cpu"), amp=False)
    acc = (logits.argmax(1) == vy).float().mean().item()
    assert acc == pytest.approx(result["history"][result["best_epoch"] - 1]["valid_acc"])


def test_mirror_tta_is_the_mean_of_both_views_probabilities():
    torch.manual_seed(0)
    model = build_model("lenet", 1, SIZE, 10)
    trained = {"state_dict": copy.deepcopy(model.state_dict()), "mean": [0.3], "std": [0.4]}
    images = torch.randint(0, 256, (30, 1, SIZE, SIZE), dtype=torch.uint8)
    cpu = torch.device("cpu")
    plain, mirrored = (predict_trained(model, trained, x, cpu, amp=False) for x in (images, images.flip(3)))
    tta = predict_trained(model, trained, images, cpu, amp=False, tta="mirror")
    assert not torch.allclose(plain.softmax(1), mirrored.softmax(1))  # the two views disagree: the mean matters
    torch.testing.assert_close(tta.exp(), (plain.softmax(1) + mirrored.softmax(1)) / 2)  # log of the mean
    assert torch.equal(predict_trained(model, trained, images, cpu, amp=False, tta="none"), plain)


def test_history_rows_and_log_epoch():
    logged = []
    result = run_fit(epochs=3, log_epoch=lambda row, scored: logged.append(row))
    assert logged == result["history"] and result["epochs_run"] == len(logged) == 3
    for row in logged:
        assert set(row) == {"epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds"}
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["valid_acc"] <= 1 and row["seconds"] >= 0


def test_weight_average_is_what_validates_and_what_is_saved():
    """With train.ema near 1 the average barely leaves the first step's weights, while the model moves on."""
    def weights(epochs, ema):
        model, scored = tiny_model(), []
        result = run_fit(model, n=20, epochs=epochs, ema=ema, log_epoch=lambda row, m: scored.append(m))
        return result["state_dict"], model, scored

    first_step, plain_model, plain_scored = weights(1, 0.0)  # 20 images, batch 20: one step an epoch
    saved, model, scored = weights(3, 1 - 1e-9)
    assert all(torch.allclose(saved[k], first_step[k]) for k in first_step)
    assert not all(torch.allclose(model.state_dict()[k], first_step[k]) for k in first_step)
    assert plain_scored == [plain_model]  # without ema, validation scores the model itself
    assert all(m is scored[0] for m in scored) and scored[0] is not model


def test_channel_stats_come_from_the_training_images():
    x, _ = separable(100)
    result = run_fit(epochs=1)
    assert result["mean"] == pytest.approx([x.float().div(255).mean().item()], rel=1e-5)
    assert result["std"] == pytest.approx([x.float().div(255).std().item()], rel=1e-4)


def test_same_seed_same_result_other_seed_other_result():
    a, b, c = (run_fit(tiny_model(), epochs=2, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert any(not torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.parametrize("epoch_steps, trained", [
    (None, 100),  # the budget: the train split's worth (5 batches of 20), two passes over the 50 labeled images
    (2, 40),      # an explicit budget: 2 steps
])
def test_only_labeled_images_train_with_skip_and_the_budget_counts_steps(epoch_steps, trained):
    # With half the images unlabeled and ssl 'skip', an epoch trains on labeled batches only, as many of them
    # as the step budget says, whatever share of the images keeps its label.
    calls = []
    model = tiny_model()
    model.register_forward_hook(lambda mod, inp, out: calls.append(len(inp[0])) if mod.training else None)
    result = run_fit(model, n=100, epochs=1, labeled=range(0, 100, 2), epoch_steps=epoch_steps)
    assert sum(calls) == trained and result["images_per_s"] >= 0


def test_one_leftover_labeled_image_does_not_break_batch_norm():
    # 21 labeled images in batches of 20: a lone 21st image would crash BatchNorm1d in training mode.
    result = run_fit(build_model("bn_cnn", 1, SIZE, 10), n=21, epochs=1, valid=separable(20, seed=1))
    assert result["epochs_run"] == 1


# early stopping and checkpoint selection --------------------------------------------------------

@pytest.mark.parametrize("losses,patience,epochs_run", [
    ([1.0, 0.9, 0.8, 0.7, 0.6], 1, 5),             # always improving: never stops
    ([1.0, 1.0, 1.0, 1.0, 1.0], 1, 5),             # equal counts as improved: never stops
    ([1.0, 1.1, 0.5, 0.6, 0.4], 1, 2),             # first worse epoch stops it at patience 1
    ([1.0, 0.9, 0.95, 0.97, 0.8], 2, 4),           # two epochs above the best 0.9
    ([1.0, 1.1, 1.2, 0.5, 0.6, 0.7, 0.8, 0.1, 0.1, 0.1], 3, 7),  # an improvement resets the count
])
def test_early_stopping_on_valid_loss(monkeypatch, losses, patience, epochs_run):
    scripted_validation(monkeypatch, losses)
    result = run_fit(epochs=len(losses), patience=patience)
    assert result["epochs_run"] == len(result["history"]) == epochs_run
    assert [r["valid_loss"] for r in result["history"]] == losses[:epochs_run]


def test_no_early_stopping_when_the_last_epoch_is_kept(monkeypatch):
    """select_metric last keeps the run's end (an annealed schedule's): stopping early would keep an epoch the
    schedule never meant to end on."""
    scripted_validation(monkeypatch, [1.0, 1.1, 1.2, 1.3])
    result = run_fit(epochs=4, patience=1, select_metric="last")
    assert result["epochs_run"] == 4 and result["best_epoch"] == 4


def test_early_stopping_with_real_validation():
    # Valid labels shifted by one class: the better the model learns, the worse the valid loss.
    vx, vy = separable(50, seed=1)
    result = run_fit(epochs=10, patience=1, valid=(vx, (vy + 1) % 10))
    history = result["history"]
    assert result["epochs_run"] < 10
    assert history[-1]["valid_loss"] > min(r["valid_loss"] for r in history[:-1])


@pytest.mark.parametrize("select_metric,best_epoch", [("valid_acc", 2), ("valid_loss", 4), ("last", 5)])
def test_best_epoch_follows_select_metric(monkeypatch, select_metric, best_epoch):
    # Accuracy peaks at epoch 2 (tied at 5: the first wins), loss bottoms out at epoch 4; "last" ignores both.
    scripted_validation(monkeypatch, [1.0, 0.9, 0.8, 0.5, 0.7], [0.1, 0.9, 0.3, 0.6, 0.9])
    states = []  # the model's weights as each epoch ended
    model = tiny_model()
    result = run_fit(model, epochs=5, select_metric=select_metric, patience=5,
                     log_epoch=lambda row, scored: states.append(copy.deepcopy(model.state_dict())))
    assert result["best_epoch"] == best_epoch
    for k, v in result["state_dict"].items():  # the checkpoint is that epoch's
        assert torch.equal(v, states[best_epoch - 1][k])
    if best_epoch < 5:  # and not the last one's
        assert any(not torch.equal(v, states[-1][k]) for k, v in result["state_dict"].items())


# optimizers and schedulers ----------------------------------------------------------------------

LR = 3e-3


def expected_lrs(scheduler):
    """The lr each of 4 epochs trains with (rows record it before the epoch-end scheduler step)."""
    return {
        "none": [LR] * 4,
        "step": [LR, LR, LR / 10, LR / 10],      # step_milestones (2,): from epoch 3 on, lr / 10
        "plateau": [LR, LR, LR, LR / 10],        # constant valid loss: reduced after 2 bad epochs (patience 2 // 2)
        # FixMatch's cosine after each epoch's 5 steps (100 images, batch 20) of the run's 20: LR cos(7 pi 5e / 320)
        "cosine": [LR * math.cos(7 * math.pi * e / 64) for e in (1, 2, 3, 4)],
    }.get(scheduler)


@pytest.mark.parametrize("scheduler", ["none", "step", "plateau", "onecycle", "cosine"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_every_optimizer_and_scheduler_trains(monkeypatch, optimizer, scheduler):
    scripted_validation(monkeypatch, [1.0] * 4)  # constant: no early stop (patience 2), plateau never improves
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    result = run_fit(model, epochs=4, optimizer=optimizer, scheduler=scheduler, lr=LR,
                     step_milestones=[2], patience=2)
    lrs = [row["lr"] for row in result["history"]]
    assert result["epochs_run"] == 4
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result["history"])
    assert any(not torch.equal(model.state_dict()[k], before[k]) for k in before)  # the weights moved
    if scheduler == "onecycle":
        # Warm up to LR over the first 30% of steps, then anneal far below it (one step per labeled
        # batch; a row holds the lr after its epoch's steps, so not exactly OneCycle's floor).
        assert max(lrs) == pytest.approx(LR, rel=0.05) and lrs[1:] == sorted(lrs[1:], reverse=True)
        assert lrs[-1] < LR / 50
    else:
        assert lrs == pytest.approx(expected_lrs(scheduler))


def test_cosine_ends_at_a_fifth_of_the_rate():
    """FixMatch's schedule decays to LR cos(7 pi / 16), about 0.195 LR, after the run's last step, not to 0."""
    result = run_fit(epochs=4, scheduler="cosine", lr=LR)
    assert result["history"][-1]["lr"] == pytest.approx(LR * 0.19509, rel=1e-4)


def test_nesterov_momentum_changes_the_sgd_steps():
    plain, nesterov = (run_fit(epochs=1, optimizer="sgd", lr=LR, nesterov=flag) for flag in (False, True))
    assert optim.OPTIMIZERS["sgd"](tiny_model().parameters(), TrainConfig(optimizer="sgd", nesterov=True)
                                    ).param_groups[0]["nesterov"]
    assert any(not torch.equal(plain["state_dict"][k], nesterov["state_dict"][k]) for k in plain["state_dict"])


def test_onecycle_survives_unlabeled_batches():
    # OneCycleLR raises if stepped past total_steps; only labeled batches may step it.
    result = run_fit(epochs=2, scheduler="onecycle", labeled=range(0, 100, 3))
    assert result["epochs_run"] == 2


# devices and prediction ------------------------------------------------------------------------

def sees(monkeypatch, cuda: bool, mps: bool) -> None:
    """Torch sees a CUDA GPU and Apple's GPU as told (fakes: this machine's own answers are not used)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_apples_gpu_then_the_cpu(monkeypatch, cuda, mps, expected):
    sees(monkeypatch, cuda, mps)
    assert device_type("auto") == expected
    assert device_type("cpu") == "cpu"


@pytest.mark.parametrize("name, message", [("cuda", "no CUDA GPU"), ("mps", r"no Apple GPU \(MPS\)")])
def test_a_named_gpu_torch_does_not_see_is_an_error(monkeypatch, name, message):
    sees(monkeypatch, cuda=False, mps=False)
    with pytest.raises(DeviceError, match=f"^train.device is '{name}' but torch sees {message}; set train.device to "
                                          "auto or cpu$"):
        resolve_device(name)


def test_apples_gpu_is_picked_without_claiming_a_cuda_gpu(monkeypatch):
    sees(monkeypatch, cuda=False, mps=True)
    monkeypatch.setattr(distributed, "claim_gpu", lambda *a: pytest.fail("claimed a CUDA GPU"))
    assert resolve_device("auto") == torch.device("mps")


def test_a_distributed_run_on_apples_gpu_is_one_line():
    with pytest.raises(ParamError, match="^a distributed run .* needs CUDA GPUs or the CPU: .* set train.device=cpu$"):
        distributed.check_fits(DistConfig(nproc_per_node=2), "mps")


@pytest.mark.parametrize("text, units", [
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n", True),   # Sapphire Rapids
    ("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n", True),              # Cooper Lake, Zen 4
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n", False),          # Ice Lake: emulated
    ("processor\t: 0\nflags\t\t: fpu avx2\nflags\t\t: avx512_bf16\n", False),        # the first CPU's line
    ("processor\t: 0\nFeatures\t: fp asimd bf16\n", False),                             # an Arm host
])
def test_bf16_units_are_read_from_the_cpus_flags(tmp_path, text, units):
    (tmp_path / "cpuinfo").write_text(text)
    assert inference.cpu_bf16_units(tmp_path / "cpuinfo") is units


def test_no_cpuinfo_means_no_bf16_units(tmp_path):
    assert inference.cpu_bf16_units(tmp_path / "absent") is False  # macOS, Windows


@pytest.mark.parametrize("kind, amp, cpu_bf16, units, expected", [
    ("cuda", True, False, False, True), ("cuda", False, True, True, False),
    ("cpu", True, False, True, False),   # train.amp alone never touches the CPU
    ("cpu", False, True, False, False),  # asked for, but no bf16 units: float32
    ("cpu", False, True, True, True),
    ("mps", True, True, True, False),
])
def test_bf16_where_the_device_has_the_units_and_the_run_asks(monkeypatch, kind, amp, cpu_bf16, units, expected):
    monkeypatch.setattr(inference, "cpu_bf16_units", lambda: units)
    assert inference.bf16(torch.device(kind), TrainConfig(amp=amp, cpu_bf16=cpu_bf16)) is expected


def test_cpu_bf16_off_trains_the_float32_weights_and_on_trains_in_bf16(monkeypatch):
    """With train.cpu_bf16 off (even on a CPU with the units), or on where the CPU has none, the weights are
    bit-identical: float32 as before the option existed. On, with the units, the steps do run in bf16."""
    def weights(cpu_bf16, units):
        monkeypatch.setattr(inference, "cpu_bf16_units", lambda: units)
        return run_fit(epochs=2, cpu_bf16=cpu_bf16)["state_dict"]

    off, no_units, on = weights(False, True), weights(True, False), weights(True, True)
    assert all(torch.equal(off[k], no_units[k]) for k in off)
    assert any(not torch.equal(off[k], on[k]) for k in off)


def test_resolve_device_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


def test_predict_shape_and_determinism(monkeypatch):
    x, _ = separable(30)
    model = build_model("cnn", 1, SIZE, 10).train()  # dropout on until predict switches to eval
    normalize = Normalize([0.2], [0.3])
    cpu = torch.device("cpu")
    first = predict(model, normalize, x, cpu, amp=False)
    assert first.shape == (30, 10) and first.dtype == torch.float32
    assert not model.training
    assert torch.equal(first, predict(model, normalize, x, cpu, amp=False))
    monkeypatch.setattr(inference, "EVAL_BATCH", 7)  # chunked: 5 forward passes, same logits in the same order
    assert torch.allclose(first, predict(model, normalize, x, cpu, amp=False), atol=1e-6)


def test_normalize_standardises_per_channel():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    out = Normalize([0.5, 0.5, 0.0], [0.5, 0.25, 1.0])(x)
    assert out[:, 0].flatten().tolist() == pytest.approx([-1.0, 1.0])
    assert out[:, 1].flatten().tolist() == pytest.approx([-2.0, 2.0])
    assert out[:, 2].flatten().tolist() == pytest.approx([0.0, 1.0])
