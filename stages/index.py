"""Stage index: which training images keep their labels (labeled.npy) and which do not (unlabeled.npy)."""
import argparse
from pathlib import Path

import numpy as np

from fewlabels.atomic import save_npy
from fewlabels.splits import labeled_index
from stages._common import clear_errors, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared", type=Path, help="data/prepared/<dataset>.npz")
    parser.add_argument("train", type=Path, help="data/split/train.npy")
    parser.add_argument("out", type=Path, help="data/index: gets labeled.npy and unlabeled.npy")
    args = parser.parse_args()
    p = load_params()
    with np.load(args.prepared) as d:
        labels, classes = d["y_train"], tuple(d["classes"])
    with clear_errors(ValueError):
        labeled, unlabeled = labeled_index(np.load(args.train), labels, p["labeled_frac"], p["seed"], classes)
    save_npy(args.out / "labeled.npy", labeled)
    save_npy(args.out / "unlabeled.npy", unlabeled)
    print(f"index: {len(labeled)} labeled, {len(unlabeled)} unlabeled (labeled_frac={p['labeled_frac']})")


if __name__ == "__main__":
    main()
