"""Stage split: stratified train/valid indices into the prepared training set."""
import argparse

from fewlabels import prepared
from fewlabels.atomic import save_npy
from fewlabels.datasets import DATASETS
from fewlabels.splits import split_train_valid
from stages._common import layout, load_params, run


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    p = load_params()
    paths = layout(p.dataset)
    labels = prepared.load(paths.prepared, DATASETS[p.dataset], "y_train")["y_train"]
    train, valid = split_train_valid(labels, p.split.valid_frac, p.seed)
    save_npy(paths.split / "train.npy", train)
    save_npy(paths.split / "valid.npy", valid)
    print(f"split: {len(train)} train, {len(valid)} valid")


if __name__ == "__main__":
    run(main)
