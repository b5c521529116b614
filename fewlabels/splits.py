"""Stratified train/valid split, the labeled/unlabeled index of the train split, and the validation labels a
run may use.

The label budget: `labeled_frac` is the fraction of *all* training labels a run sees, validation included. The
train split keeps labeled_frac of its labels (labeled_index) and so does the validation split (valid_index):
at labeled_frac 0.01 on Fashion-MNIST a run learns from 540 labels and selects its checkpoint with 60, 600 of
60,000 in all. The validation images whose labels are hidden are dropped, not added to the unlabeled pool, so
the unlabeled pool and the step budget stay the same at every labeled_frac and runs differ only in labels.
"""
import math

import numpy as np

from fewlabels.errors import DataError, ParamError


def split_train_valid(labels: np.ndarray, valid_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted int64 indices of a stratified train/valid split of `labels`."""
    # Imported here: the index stage uses this module too and need not pay for sklearn's import.
    from sklearn.model_selection import train_test_split

    present, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        raise DataError(f"class {present[counts.argmin()]} has {counts.min()} image: a stratified split needs "
                        "at least 2 per class")
    n_valid = math.ceil(valid_frac * len(labels))  # as scikit-learn rounds test_size
    if min(n_valid, len(labels) - n_valid) < len(present):
        raise ParamError(f"split.valid_frac={valid_frac} gives {n_valid} of {len(labels)} images to validation: "
                         f"train and valid need at least one image of each of the {len(present)} classes")
    train, valid = train_test_split(
        np.arange(len(labels)), test_size=valid_frac, stratify=labels, random_state=seed
    )
    return np.sort(train).astype(np.int64), np.sort(valid).astype(np.int64)


def labeled_index(train_idx: np.ndarray, labels: np.ndarray, labeled_frac: float, seed: int,
                  classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Split `train_idx` into sorted (labeled, unlabeled) indices, stratified per class.

    Each class with n training images keeps round(labeled_frac * n) labels, drawn at random
    from `seed`; a class left with none is an error (the model could never learn it).
    """
    rng = np.random.default_rng(seed)
    y = labels[train_idx]
    present, counts = np.unique(y, return_counts=True)
    labeled, starved = [], []
    for c in present:
        members = train_idx[y == c]
        k = round(labeled_frac * len(members))
        if k == 0:
            starved.append(classes[c])
        labeled.append(rng.permutation(members)[:k])
    if starved:
        raise ParamError(
            f"labeled_frac={labeled_frac} leaves no label for class(es) {', '.join(starved)}; "
            f"raise labeled_frac to at least {1 / counts.min():.2g}"
        )
    labeled = np.sort(np.concatenate(labeled)).astype(np.int64)
    unlabeled = np.setdiff1d(train_idx, labeled).astype(np.int64)
    return labeled, unlabeled


def valid_index(valid_idx: np.ndarray, labels: np.ndarray, labeled_frac: float, seed: int) -> np.ndarray:
    """The sorted validation indices whose labels a run may use: round(labeled_frac * n) of each class's n, at
    least one, drawn at random from `seed` (a stream of its own: the train labels drawn from `seed` do not move)."""
    rng = np.random.default_rng([seed, 1])
    y = labels[valid_idx]
    kept = [rng.permutation(valid_idx[y == c])[:max(1, round(labeled_frac * np.sum(y == c)))] for c in np.unique(y)]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def labels_used(labels: np.ndarray, labeled: np.ndarray, valid: np.ndarray, classes: list[str]) -> dict:
    """The labels a run may read, train and validation, in all and per class, against every training label
    (`labels`: the whole training set's): what runs/<model>.json and the report show."""
    per_class = {name: {"train": int(np.sum(labels[labeled] == c)), "valid": int(np.sum(labels[valid] == c))}
                 for c, name in enumerate(classes)}
    return {"train": len(labeled), "valid": len(valid), "total": len(labeled) + len(valid), "of": len(labels),
            "per_class": per_class}
