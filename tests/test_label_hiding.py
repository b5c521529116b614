"""The label of an unlabeled image must never reach training: not in a batch, not in the dataset.

The trick used throughout: every unlabeled image gets the true label SENTINEL (7) and no labeled
image does, so finding a 7 anywhere the training loop can look means a hidden label leaked.
Images carry their own index in pixel [0, 0, 0], so a recorded batch tells which images it holds.
"""
import json
import sys

import numpy as np
import pytest
import torch

from fewlabels import engine, prepared, registry
from fewlabels.datasets import DATASETS
from fewlabels.data import UNLABELED, FitInputs, IndexBatch, InMemoryImages, collate_pure, mask_labels
from fewlabels.params import SSLConfig, TrainConfig
from fewlabels.methods.base import Method
from fewlabels.models import build_model

SENTINEL = 7  # the true label of every unlabeled image, and of no labeled one


def hidden_label_data(n=60, labeled_frac=0.5, seed=0):
    """(images, true labels, labeled idx, unlabeled idx); images [n, 1, 28, 28] uint8 with index in pixel 0."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_labeled = round(labeled_frac * n)
    labeled, unlabeled = np.sort(order[:n_labeled]), np.sort(order[n_labeled:])
    y = np.full(n, SENTINEL, dtype=np.int64)
    y[labeled] = rng.choice([c for c in range(10) if c != SENTINEL], size=n_labeled)
    x = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)  # n <= 256
    return torch.from_numpy(x), torch.from_numpy(y), labeled, unlabeled


def indices_of(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].long().tolist()


# collate and dataset ----------------------------------------------------------------------------

def test_collate_drops_labels_of_unlabeled_batch():
    x, y, labeled, unlabeled = hidden_label_data()
    dataset = InMemoryImages(x, y)  # even given true labels, an unlabeled batch must not carry them
    batch = collate_pure(dataset.__getitems__(IndexBatch(torch.as_tensor(unlabeled[:5]), False)))
    assert batch.y is None and not batch.labeled
    assert indices_of(batch.x) == unlabeled[:5].tolist()
    batch = collate_pure(dataset.__getitems__(IndexBatch(torch.as_tensor(labeled[:5]), True)))
    assert batch.labeled and torch.equal(batch.y, y[labeled[:5]])


def test_dataset_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        InMemoryImages(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))


@pytest.mark.parametrize("as_numpy", [False, True])
def test_mask_labels_hides_every_unlabeled_label(as_numpy):
    _, y, labeled, unlabeled = hidden_label_data()
    labels = y.numpy() if as_numpy else y
    masked = mask_labels(labels, labeled)
    assert masked.dtype == torch.int64 and masked.shape == y.shape
    assert (masked[unlabeled] == UNLABELED).all()
    assert torch.equal(masked[labeled], y[labeled])
    assert SENTINEL not in masked.tolist()
    assert (y[unlabeled] == SENTINEL).all()  # the input is a copy source, not modified in place


def test_mask_labels_with_no_labeled_index_hides_everything():
    assert mask_labels(np.array([3, 1, 4]), np.array([], dtype=np.int64)).tolist() == [UNLABELED] * 3


# the training loop -------------------------------------------------------------------------------

class Spy:
    """Records what the engine builds: the dataset's label tensor and every batch the loop draws."""

    def __init__(self, monkeypatch, method="spy"):
        self.dataset_labels, self.batches, self.objective_batches, self.objective_index = [], [], [], []
        self.run_labels = []  # what the method was told of the labels when it was built
        spy = self

        class RecordingImages(InMemoryImages):
            def __init__(self, images, labels):
                spy.dataset_labels.append(labels.clone())
                super().__init__(images, labels)

        def recording_collate(fetched):
            batch = collate_pure(fetched)
            spy.batches.append(batch)
            return batch

        class Entropy(Method):
            """A made-up method (entropy minimisation) that gives the unlabeled path a loss."""
            def loss(self, student, x, views, teacher, index):
                p = student(x).softmax(1)
                return -(p * p.clamp_min(1e-8).log()).sum(1).mean()

        build = engine.build_method

        def recording_build(ssl, run):
            spy.run_labels.append(run.labels.clone())
            built = Entropy(ssl, run) if method == "spy" else build(ssl, run)
            loss = built.loss

            def recording_loss(student, x, views, teacher, index):
                # The seam's whole interface: normalised images, augmentations, models and positions; no labels.
                spy.objective_batches.append(x)
                spy.objective_index.append(index.tolist())
                return loss(student, x, views, teacher, index)

            built.loss = recording_loss
            return built

        monkeypatch.setattr(engine, "InMemoryImages", RecordingImages)
        monkeypatch.setattr(engine, "collate_pure", recording_collate)
        monkeypatch.setattr(engine, "build_method", recording_build)
        if method == "spy":
            monkeypatch.setitem(registry.METHODS, "spy", registry.Spec("a stand-in that learns from unlabeled batches"))


def fit_one_epoch(x, train_labels, labeled, unlabeled, method="spy", **ssl_settings):
    model = build_model("cifar_tanh", 1, 28, 10)
    cfg = TrainConfig(batch_size=8, epochs=1, device="cpu", amp=False, ema=0.9 if method == "mean_teacher" else 0.0)
    # Weight 1 from the first epoch, every unlabeled batch once. model_construct: 'spy' is no method of the schema.
    ssl = SSLConfig.model_construct(method=method, warmup_epochs=0, unlabeled_ratio=None, **ssl_settings)
    return engine.fit(model, FitInputs(x, train_labels, labeled, unlabeled, x[:10], torch.arange(10)), cfg, seed=0, ssl=ssl)


@pytest.mark.parametrize("method, settings", [
    ("spy", {}), *[(method, {}) for method in registry.METHODS],
    ("fixmatch", {"dist_align": True, "strong": "randaugment"}),
    ("flexmatch", {"dist_align": True, "strong": "randaugment"}),
    ("freematch", {"strong": "randaugment"}),
], ids=lambda v: "+".join(f"{k}={x}" for k, x in v.items()) or "defaults" if isinstance(v, dict) else v)
def test_training_loop_never_sees_an_unlabeled_label(monkeypatch, method, settings):
    # 'spy' is a stand-in objective; the others are the engine's own, watched through a wrapper.
    x, y, labeled, unlabeled = hidden_label_data()
    spy = Spy(monkeypatch, method)
    fit_one_epoch(x, mask_labels(y, labeled), labeled, unlabeled, method, **settings)

    # The dataset the engine indexes holds no hidden label: -1 at every unlabeled position.
    [stored] = spy.dataset_labels
    assert SENTINEL not in stored.tolist()
    assert (stored[unlabeled] == UNLABELED).all() and torch.equal(stored[labeled], y[labeled])
    [told] = spy.run_labels  # and the method was told the same, no more
    assert torch.equal(told, stored)

    # Every batch the loop drew: labeled ones hold only labeled images with their true labels,
    # unlabeled ones hold only unlabeled images and no labels at all.
    seen = {True: [], False: []}
    for batch in spy.batches:
        idx = indices_of(batch.x)
        seen[batch.labeled] += idx
        if batch.labeled:
            assert set(idx) <= set(labeled.tolist())
            assert batch.y.tolist() == y[idx].tolist() and SENTINEL not in batch.y.tolist()
        else:
            assert batch.y is None and set(idx) <= set(unlabeled.tolist())
    # the step budget draws the labeled images in whole passes, the unlabeled ones by the ratio
    assert set(seen[True]) == set(labeled.tolist()) and set(seen[False]) <= set(unlabeled.tolist())

    # The unlabeled objective got exactly the unlabeled batches' images, and nothing else; the positions it got
    # with them (for FlexMatch's memory of each image) are theirs.
    unlabeled_batches = [b for b in spy.batches if not b.labeled]
    assert [len(images) for images in spy.objective_batches] == [len(b.x) for b in unlabeled_batches] and unlabeled_batches
    assert spy.objective_index == [indices_of(b.x) for b in unlabeled_batches]


def test_spy_would_catch_unmasked_labels(monkeypatch):
    # Control: hand the engine the true labels and the dataset check above would fail.
    x, y, labeled, unlabeled = hidden_label_data()
    spy = Spy(monkeypatch)
    fit_one_epoch(x, y, labeled, unlabeled)
    assert SENTINEL in spy.dataset_labels[0].tolist()


def test_train_stage_masks_labels_before_fit(tmp_path, monkeypatch):
    """stages/train.py must mask: run its main() on files laid out as the pipeline writes them.

    The index files hold positions in the full training set; the train split skips some of them
    (the validation images), so the stage has to map indices correctly as well as mask.
    """
    import stages.train

    from dvcrepo import write_params

    n = 80
    x, y, labeled_all, unlabeled_all = hidden_label_data(n)
    valid = np.arange(0, n, 8)  # every 8th image is a validation image
    y[valid] = 0                # ... with a real (non-sentinel) label
    train = np.setdiff1d(np.arange(n), valid)
    labeled, unlabeled = np.intersect1d(labeled_all, train), np.setdiff1d(unlabeled_all, valid)
    valid_labeled = valid[::3]  # the validation images whose labels the run may use (the label budget)

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {"models": ["cifar_tanh"]})
    prepared.save(tmp_path / "data/prepared/fashion_mnist", {"x_train": x.numpy(), "y_train": y.numpy(), "x_test": x.numpy()[:4],
                                          "y_test": y.numpy()[:4]}, DATASETS["fashion_mnist"].classes)
    for d, files in {"split": {"train": train, "valid": valid},
                     "index": {"labeled": labeled, "unlabeled": unlabeled, "valid": valid_labeled}}.items():
        (tmp_path / "data" / d).mkdir(parents=True)
        for name, array in files.items():
            np.save(tmp_path / "data" / d / f"{name}.npy", array.astype(np.int64))

    calls = []

    def fake_fit(model, data, *rest, **options):
        calls.append(tuple(data))
        # pseudo-labels right at every unlabeled image but the first: the stage scores them on the hidden labels
        targets = torch.full((len(data.train_images),), SENTINEL)
        targets[data.unlabeled[0]] = 0
        options["hooks"].pseudo_labels(2, targets, torch.ones(len(targets)))
        return {"state_dict": {}, "best_epoch": 1, "history": [], "epochs_run": 0, "train_seconds": 0.0,
                "world_size": 1,
                "images_per_s": 0.0, "device": "cpu", "mean": [0.5], "std": [0.5]}

    monkeypatch.setattr(stages.train, "fit", fake_fit)
    monkeypatch.setattr(sys, "argv", ["train", "cifar_tanh"])
    stages.train.main()

    [(train_images, train_labels, labeled_pos, unlabeled_pos, valid_images, valid_labels)] = calls
    assert indices_of(train_images) == train.tolist()
    assert SENTINEL not in train_labels.tolist()
    # Positions handed to fit point at the right images, and only labeled positions keep labels.
    assert [indices_of(train_images)[p] for p in labeled_pos] == labeled.tolist()
    assert [indices_of(train_images)[p] for p in unlabeled_pos] == unlabeled.tolist()
    assert (train_labels[unlabeled_pos] == UNLABELED).all()
    assert train_labels[labeled_pos].tolist() == y[labeled].tolist()
    # validation sees only the labels of the budget, not the whole validation split's
    assert indices_of(valid_images) == valid_labeled.tolist() and valid_labels.tolist() == y[valid_labeled].tolist()
    run_record = json.loads((tmp_path / "runs/cifar_tanh.json").read_text())
    assert (run_record["n_labeled"], run_record["n_unlabeled"]) == (len(labeled), len(unlabeled))
    used = run_record["labels_used"]
    assert (used["train"], used["valid"], used["total"], used["of"]) == (
        len(labeled), len(valid_labeled), len(labeled) + len(valid_labeled), n)
    share = (len(unlabeled) - 1) / len(unlabeled)
    assert run_record["pseudo_labels"] == [{"epoch": 2, "acc": share, "weighted_acc": share, "covered": 1.0}]
