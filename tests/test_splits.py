"""Stratified train/valid split and the labeled/unlabeled index (fewlabels.splits)."""
import numpy as np
import pytest

from fewlabels.atomic import save_npy
from fewlabels.errors import DataError, ParamError
from fewlabels.splits import labeled_index, labels_used, split_train_valid, valid_index

CLASSES = tuple(f"class{c}" for c in range(10))


def _labels(seed: int = 0) -> np.ndarray:
    """Imbalanced labels (class c has 20 + 7c members), shuffled: rounding differs per class."""
    counts = 20 + 7 * np.arange(10)
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(10), counts))


@pytest.mark.parametrize("valid_frac", [0.1, 0.25, 0.5])
def test_split_is_stratified_disjoint_and_complete(valid_frac):
    labels = _labels()
    train, valid = split_train_valid(labels, valid_frac, seed=0)
    assert train.dtype == valid.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(valid) > 0)  # sorted, no repeats
    assert np.intersect1d(train, valid).size == 0
    np.testing.assert_array_equal(np.union1d(train, valid), np.arange(len(labels)))
    for c in range(10):
        n_c = np.sum(labels == c)
        assert abs(np.sum(labels[valid] == c) - valid_frac * n_c) <= 1, f"class {c}"
        assert abs(np.sum(labels[train] == c) - (1 - valid_frac) * n_c) <= 1, f"class {c}"


def test_split_depends_on_seed_only():
    labels = _labels()
    a, b = split_train_valid(labels, 0.2, seed=3), split_train_valid(labels, 0.2, seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], split_train_valid(labels, 0.2, seed=4)[1])


@pytest.fixture
def train_split():
    labels = _labels()
    return labels, split_train_valid(labels, 0.1, seed=0)[0]


@pytest.mark.parametrize("frac", [0.05, 0.1, 0.33, 0.5, 0.9])
def test_index_partitions_the_train_split_per_class(train_split, frac):
    labels, train = train_split
    labeled, unlabeled = labeled_index(train, labels, frac, seed=0, classes=CLASSES)
    assert labeled.dtype == unlabeled.dtype == np.int64
    assert np.intersect1d(labeled, unlabeled).size == 0
    np.testing.assert_array_equal(np.union1d(labeled, unlabeled), train)  # nothing from valid, nothing lost
    assert len(labeled) + len(unlabeled) == len(train)  # no index twice
    for c in range(10):
        n_c = np.sum(labels[train] == c)
        assert np.sum(labels[labeled] == c) == round(frac * n_c), f"class {c}"


def test_index_full_fraction_labels_everything(train_split):
    labels, train = train_split
    labeled, unlabeled = labeled_index(train, labels, 1.0, seed=0, classes=CLASSES)
    np.testing.assert_array_equal(labeled, train)
    assert unlabeled.size == 0 and unlabeled.dtype == np.int64


def test_index_too_small_fraction_names_the_starved_class(train_split):
    labels, train = train_split
    # class0 has the fewest training images (18): 0.02 * 18 rounds to 0 labels, class9 keeps 1.
    with pytest.raises(ParamError, match=r"no label for class\(es\) class0\b") as err:
        labeled_index(train, labels, 0.02, seed=0, classes=CLASSES)
    assert "class9" not in str(err.value)
    suggested = float(str(err.value).rsplit(" ", 1)[-1])
    labeled_index(train, labels, suggested, seed=0, classes=CLASSES)  # the suggested fraction works


def test_index_same_seed_same_bytes_different_seed_different(train_split, tmp_path):
    labels, train = train_split
    runs = {name: labeled_index(train, labels, 0.3, seed=seed, classes=CLASSES)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))}
    for name, (labeled, _) in runs.items():
        save_npy(tmp_path / f"{name}.npy", labeled)
    # DVC hashes the file: a rerun with the same params must produce the very same bytes.
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    np.testing.assert_array_equal(runs["a"][1], runs["b"][1])
    assert not np.array_equal(runs["a"][0], runs["c"][0])
    assert len(runs["a"][0]) == len(runs["c"][0])  # the seed changes which, not how many


def test_split_refuses_a_class_with_one_image():
    labels = np.array([0, 0, 1, 1, 2])  # class 2 cannot be on both sides of a stratified split
    with pytest.raises(DataError, match="class 2 has 1 image: a stratified split needs at least 2 per class"):
        split_train_valid(labels, 0.5, seed=0)


def test_split_refuses_a_validation_share_too_small_for_every_class():
    labels = np.repeat(np.arange(10), 5)  # 50 images: 1% gives validation 1 image for 10 classes
    with pytest.raises(ParamError, match=r"split.valid_frac=0.01 gives 1 of 50 images to validation"):
        split_train_valid(labels, 0.01, seed=0)
    train, valid = split_train_valid(labels, 0.2, seed=0)  # 10 images: one per class
    assert sorted(labels[valid]) == list(range(10))


# the validation labels: the label budget covers validation too -----------------------------------------

@pytest.mark.parametrize("frac", [0.001, 0.01, 0.05, 0.1, 0.5, 1.0])
def test_validation_keeps_labeled_frac_of_its_labels_per_class_at_least_one(frac):
    labels = _labels()
    train, valid = split_train_valid(labels, 0.5, seed=0)
    kept = valid_index(valid, labels, frac, seed=0)
    assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0)
    assert np.isin(kept, valid).all()  # validation images only, so disjoint from every train label
    labeled, _ = labeled_index(train, labels, max(frac, 0.1), seed=0, classes=CLASSES)
    assert np.intersect1d(kept, labeled).size == 0
    for c in range(10):
        n_c = np.sum(labels[valid] == c)
        assert np.sum(labels[kept] == c) == max(1, round(frac * n_c)), f"class {c}"
    if frac == 1.0:
        np.testing.assert_array_equal(kept, valid)  # every label kept: the validation of earlier runs


def test_validation_labels_depend_on_seed_and_leave_the_train_draw_alone(train_split):
    labels = _labels()
    _, valid = split_train_valid(labels, 0.5, seed=0)
    np.testing.assert_array_equal(valid_index(valid, labels, 0.2, seed=5), valid_index(valid, labels, 0.2, seed=5))
    assert not np.array_equal(valid_index(valid, labels, 0.2, seed=5), valid_index(valid, labels, 0.2, seed=6))
    # the train draw is the one earlier runs made from the same seed: its own stream
    labels, train = train_split
    first = labeled_index(train, labels, 0.2, seed=5, classes=CLASSES)[0]
    valid_index(valid, labels, 0.2, seed=5)
    np.testing.assert_array_equal(first, labeled_index(train, labels, 0.2, seed=5, classes=CLASSES)[0])


def test_labels_used_counts_train_and_validation_labels_per_class():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
    used = labels_used(labels, np.array([0, 2, 5, 6]), np.array([1, 9]), ["a", "b", "c"])
    assert used == {"train": 4, "valid": 2, "total": 6, "of": 10,
                    "per_class": {"a": {"train": 1, "valid": 2}, "b": {"train": 1, "valid": 0},
                                  "c": {"train": 2, "valid": 0}}}
