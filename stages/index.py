"""Stage index: which training images keep their labels (labeled.npy), which do not (unlabeled.npy), and which
validation images keep theirs (valid.npy): labeled_frac of each split's labels (fewlabels.splits)."""
import argparse

from fewlabels import prepared
from fewlabels.atomic import save_npy
from fewlabels.datasets import DATASETS
from fewlabels.splits import labeled_index, labels_used, valid_index
from stages._common import layout, load_params, run


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    p = load_params()
    paths = layout(p.dataset)
    d = prepared.load(paths.prepared, DATASETS[p.dataset], "y_train", "classes")
    train, valid = (prepared.load_indices(paths.split / f"{name}.npy", len(d["y_train"]), "run `dvc repro -f split`")
                    for name in ("train", "valid"))
    labeled, unlabeled = labeled_index(train, d["y_train"], p.labeled_frac, p.seed, d["classes"])
    valid_labeled = valid_index(valid, d["y_train"], p.labeled_frac, p.seed)
    save_npy(paths.index / "labeled.npy", labeled)
    save_npy(paths.index / "unlabeled.npy", unlabeled)
    save_npy(paths.index / "valid.npy", valid_labeled)
    used = labels_used(d["y_train"], labeled, valid_labeled, d["classes"])
    print(f"index: {len(labeled)} labeled, {len(unlabeled)} unlabeled train images; {len(valid_labeled)} of "
          f"{len(valid)} validation labels kept; labels used: {used['total']:,} of {used['of']:,} "
          f"(labeled_frac={p.labeled_frac})")


if __name__ == "__main__":
    run(main)
