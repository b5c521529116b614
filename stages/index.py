"""Stage index: which training images keep their labels (labeled.npy) and which do not (unlabeled.npy)."""
import argparse
from pathlib import Path

import numpy as np

from fewlabels import prepared
from fewlabels.atomic import save_npy
from fewlabels.splits import labeled_index
from stages._common import load_params, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared", type=Path, help="data/prepared/<dataset>")
    parser.add_argument("train", type=Path, help="data/split/train.npy")
    parser.add_argument("out", type=Path, help="data/index: gets labeled.npy and unlabeled.npy")
    args = parser.parse_args()
    p = load_params()
    d = prepared.load(args.prepared, "y_train", "classes")
    labeled, unlabeled = labeled_index(np.load(args.train), d["y_train"], p.labeled_frac, p.seed, d["classes"])
    save_npy(args.out / "labeled.npy", labeled)
    save_npy(args.out / "unlabeled.npy", unlabeled)
    print(f"index: {len(labeled)} labeled, {len(unlabeled)} unlabeled (labeled_frac={p.labeled_frac})")


if __name__ == "__main__":
    run(main)
