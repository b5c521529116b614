"""Stage split: stratified train/valid indices into the prepared training set."""
import argparse
from pathlib import Path

import numpy as np

from fewlabels.atomic import save_npy
from fewlabels.splits import split_train_valid
from stages._common import clear_errors, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared", type=Path, help="data/prepared/<dataset>.npz")
    parser.add_argument("out", type=Path, help="data/split: gets train.npy and valid.npy")
    args = parser.parse_args()
    p = load_params()
    with np.load(args.prepared) as d:
        labels = d["y_train"]
    with clear_errors(ValueError):  # e.g. a class with a single image cannot be stratified
        train, valid = split_train_valid(labels, p["split"]["valid_frac"], p["seed"])
    save_npy(args.out / "train.npy", train)
    save_npy(args.out / "valid.npy", valid)
    print(f"split: {len(train)} train, {len(valid)} valid")


if __name__ == "__main__":
    main()
