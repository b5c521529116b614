"""Stage index: which training images keep their labels (labeled.npy) and which do not (unlabeled.npy)."""
import argparse

import numpy as np

from fewlabels import prepared
from fewlabels.atomic import save_npy
from fewlabels.splits import labeled_index
from stages._common import layout, load_params, run


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    p = load_params()
    paths = layout(p.dataset)
    d = prepared.load(paths.prepared, "y_train", "classes")
    train = np.load(paths.split / "train.npy")
    labeled, unlabeled = labeled_index(train, d["y_train"], p.labeled_frac, p.seed, d["classes"])
    save_npy(paths.index / "labeled.npy", labeled)
    save_npy(paths.index / "unlabeled.npy", unlabeled)
    print(f"index: {len(labeled)} labeled, {len(unlabeled)} unlabeled (labeled_frac={p.labeled_frac})")


if __name__ == "__main__":
    run(main)
