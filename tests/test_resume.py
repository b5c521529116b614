"""Resuming training: a run continued from any epoch's saved state ends exactly as one that never stopped.

The engine's TrainState holds the weights, optimizer, scheduler, weight average, early-stopping state,
best checkpoint, counters and RNG states; the train stage saves it after every epoch (ResumeStore) and
loads it when rerun. Here the state goes through a real file each time, as in the stage.
"""
import copy

import numpy as np
import pytest
import torch

from fewlabels import checkpoint, params, registry, resume
from fewlabels.data import FitInputs, mask_labels
from fewlabels.engine import Hooks, fit
from fewlabels.errors import DataError
from fewlabels.models import build_model
from fewlabels.params import SSLConfig, TrainConfig
from test_engine import SIZE, separable

RECIPES = {  # each touches a different piece of state: scheduler kinds, momentum, the weight average, RNG,
    "adam": ({}, {}),
    "sgd_onecycle_flip_crop": ({"optimizer": "sgd", "scheduler": "onecycle", "augment": "flip_crop"}, {}),
    "step_smoothing": ({"scheduler": "step", "step_milestones": [2], "label_smoothing": 0.1}, {}),
    "plateau_valid_loss": ({"scheduler": "plateau", "select_metric": "valid_loss", "patience": 2}, {}),
    "fixmatch_ema": ({"ema": 0.9, "augment": "crop"}, {"method": "fixmatch", "threshold": 0.5, "warmup_epochs": 1}),
    # the methods' running statistics (fewlabels.methods): FlexMatch's per-image memory and distribution
    # alignment's class average here, with the published FixMatch optimizer and schedule; FreeMatch's averages next
    "flexmatch_dist_align_cosine": (
        {"optimizer": "sgd", "nesterov": True, "scheduler": "cosine", "weight_decay": 5e-4, "ema": 0.9,
         "augment": "flip_crop"},
        {"method": "flexmatch", "dist_align": True, "stats_ema": 0.9, "strong": "randaugment", "threshold": 0.5,
         "warmup_epochs": 0, "ema_teacher": False}),
    "freematch_randaugment": ({"augment": "crop"}, {"method": "freematch", "stats_ema": 0.9, "strong": "randaugment",
                                                    "warmup_epochs": 1}),

    "pseudo_label": ({}, {"method": "pseudo_label", "threshold": 0.5}),
    "mean_teacher": ({"ema": 0.9}, {"method": "mean_teacher"}),
    "label_propagation_ema": ({"ema": 0.9, "augment": "crop"}, {"method": "label_propagation", "lp_knn": 10}),
}
EPOCHS = 4


def train(tmp_path, recipe, resume=None, stop_after=None):
    """fit() on tiny data with `recipe`; every epoch's state round-trips through a file. Returns (result, states).
    stop_after=k: interrupt (as a kill would) once epoch k's state is saved."""
    cfg_overrides, ssl_overrides = RECIPES[recipe]
    cfg = TrainConfig(**{"epochs": EPOCHS, "batch_size": 20, "device": "cpu", "lr": 3e-3, **cfg_overrides})
    ssl = SSLConfig(**ssl_overrides)
    x, y = separable(120)
    vx, vy = separable(40, seed=1)
    labeled, unlabeled = np.arange(0, 120, 2), np.arange(1, 120, 2)
    states = []
    tmp_path.mkdir(exist_ok=True)

    def save_state(state):
        path = tmp_path / f"state{len(states)}.pt"
        checkpoint.save(path, state)
        states.append(checkpoint.load(path, "a state", "", map_location="cpu", max_bytes=1 << 30))
        if stop_after is not None and len(states) == stop_after:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    model = build_model("bn_small", 1, SIZE, 10)
    result = fit(model, FitInputs(x, mask_labels(y, labeled), labeled, unlabeled, vx, vy), cfg, 0, ssl,
                 hooks=Hooks(save_state=save_state, resume=resume))
    return result, states


def test_every_method_has_a_resume_recipe():
    assert {ssl.get("method", "skip") for _, ssl in RECIPES.values()} == set(registry.METHODS)


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("killed_after", [1, 3])
def test_resumed_run_ends_bit_identical(tmp_path, recipe, killed_after):
    whole, _ = train(tmp_path / "whole", recipe)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", recipe, stop_after=killed_after)
    saved = checkpoint.load(tmp_path / "killed" / f"state{killed_after - 1}.pt", "a state", "", map_location="cpu",
                             max_bytes=1 << 30)
    resumed, _ = train(tmp_path / "resumed", recipe, resume=saved)
    assert resumed["best_epoch"] == whole["best_epoch"] and resumed["epochs_run"] == whole["epochs_run"]
    for key, tensor in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], tensor), key
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole["history"]]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed["history"]] == strip


def test_an_early_stopped_run_resumes_as_stopped(tmp_path, monkeypatch):
    """A run killed after early stopping chose its last epoch does not train on when resumed."""
    from fewlabels import engine

    losses = iter([1.0, 2.0, 3.0, 4.0])  # never improves after epoch 1: patience 2 stops after epoch 3
    monkeypatch.setattr(engine, "loss_and_accuracy", lambda logits, labels: (next(losses), 0.5))
    monkeypatch.setitem(RECIPES, "patience", ({"patience": 2, "select_metric": "valid_acc"}, {}))
    whole, states = train(tmp_path, "patience")
    assert whole["epochs_run"] == 3 and states[-1]["counters"]["stopped"]
    resumed, more = train(tmp_path, "patience", resume=copy.deepcopy(states[-1]))
    assert resumed["epochs_run"] == 3 and more == []


def test_resume_store_keys_runs_and_refuses_foreign_files(tmp_path):
    a = resume.digest(model="cnn", train={"lr": 0.001}, data="d", code=[("x.py", "1")])
    assert a == resume.digest(model="cnn", train={"lr": 0.001}, data="d", code=[("x.py", "1")])
    assert a != resume.digest(model="cnn", train={"lr": 0.002}, data="d", code=[("x.py", "1")])
    assert a != resume.digest(model="cnn", train={"lr": 0.001}, data="d", code=[("x.py", "2")])
    store = checkpoint.ResumeStore(tmp_path / "resume", a)
    assert store.load("cpu", 1 << 20) is None
    store.save({"counters": {"epoch": 2}, "w": torch.ones(2)})
    assert store.saved_epoch == 2 and store.load("cpu", 1 << 20)["counters"] == {"epoch": 2}
    store.path.write_bytes(b"PK\x03\x04 not a torch file")
    with pytest.raises(DataError, match=r"resume/.*\.pt is not a resume state written by the train stage .*; "
                                         r"delete it to start the run over: rm -r .*resume"):
        store.load("cpu", 1 << 20)
    store.clear()
    assert not (tmp_path / "resume").exists()


def test_settings_key_changes_with_every_setting_a_run_reads_and_no_other():
    p = params.Params()
    key = resume.settings_key(p, "cnn")
    assert key == resume.settings_key(params.Params(), "cnn") and key != resume.settings_key(p, "lenet")
    for change in ({"seed": 1}, {"labeled_frac": 0.5}, {"train": {"lr": 0.01}}, {"ssl": {"method": "fixmatch"}},
                   {"dist": {"nproc_per_node": 2}}):
        assert resume.settings_key(params.Params(**change), "cnn") != key, change
    # the split changes the data, which the other half of the key digests
    for change in ({"split": {"valid_frac": 0.2}}, {"data": {"retries": 5}}, {"models": ["cnn"]}):
        assert resume.settings_key(params.Params(**change), "cnn") == key, change


def test_sweep_deletes_the_states_no_run_of_these_params_continues(tmp_path):
    p = params.Params(models=["cnn", "lenet"])
    root = tmp_path / ".resume"
    current = resume.state_name(p, "cnn", device="cpu") + ".pt"
    kept = [root / "cnn" / current, root / "cnn" / f".{current}.123.tmp", root / "cnn" / "notes" / "mine.txt"]
    other = resume.state_name(params.Params(seed=5), "cnn", device="cpu") + ".pt"
    swept = [root / "cnn" / other, root / "cnn" / "old-style-key.pt",
             root / "resnet" / (resume.state_name(p, "resnet") + ".pt"),  # a model params.yaml no longer has
             root / "lenet" / (resume.state_name(p, "cnn") + ".pt")]     # another model's settings
    for path in kept + swept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"state")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.pt").write_text("not the pipeline's")
    (root / "mlp").symlink_to(outside)
    assert resume.sweep(root, p) == sorted(swept)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in swept)
    assert sorted(f.name for f in root.iterdir()) == ["cnn", "mlp"]  # emptied folders go; the link stays
    assert (outside / "precious.pt").exists()
    assert resume.sweep(tmp_path / "none", p) == []


def test_project_sources_are_every_project_module_imported_or_not():
    sources = dict(checkpoint.project_sources())
    assert "fewlabels/engine.py" in sources and "fewlabels/methods/fixmatch.py" in sources
    assert all(path.startswith(("fewlabels/", "stages/")) and path.endswith(".py") for path in sources)
