"""Stratified train/valid split and the labeled/unlabeled index of the train split."""
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
