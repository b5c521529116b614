"""Stage split: stratified train/valid indices into the prepared training set."""
import argparse
from pathlib import Path

from fewlabels import prepared
from fewlabels.atomic import save_npy
from fewlabels.splits import split_train_valid
from stages._common import load_params, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prepared", type=Path, help="data/prepared/<dataset>")
    parser.add_argument("out", type=Path, help="data/split: gets train.npy and valid.npy")
    args = parser.parse_args()
    p = load_params()
    labels = prepared.load(args.prepared, "y_train")["y_train"]
    train, valid = split_train_valid(labels, p.split.valid_frac, p.seed)
    save_npy(args.out / "train.npy", train)
    save_npy(args.out / "valid.npy", valid)
    print(f"split: {len(train)} train, {len(valid)} valid")


if __name__ == "__main__":
    run(main)
