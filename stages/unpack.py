"""Stage unpack: parse the raw files into data/prepared/<dataset>.npz.

The npz holds x_train/x_test (uint8 [N, C, H, W]), y_train/y_test (int64 [N]) and classes.
"""
import argparse
from pathlib import Path

import numpy as np

from fewlabels.atomic import atomic_path
from fewlabels.datasets import DATASETS
from fewlabels.formats import LOADERS, FormatError
from stages._common import clear_errors, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path, help="data/raw/<dataset>")
    parser.add_argument("out", type=Path, help="data/prepared/<dataset>.npz")
    args = parser.parse_args()
    spec = DATASETS[load_params()["dataset"]]
    with clear_errors(FormatError):
        arrays = LOADERS[spec.format](args.raw, spec.files)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
        np.savez(f, classes=np.array(spec.classes), **arrays)
    print(f"{args.out}: train {arrays['x_train'].shape}, test {arrays['x_test'].shape}")


if __name__ == "__main__":
    main()
