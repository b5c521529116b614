"""Stage unpack: parse the raw files into data/prepared/<dataset>/ (fewlabels.prepared: one .npy per array)."""
import argparse
from pathlib import Path

from fewlabels import prepared
from fewlabels.datasets import DATASETS
from fewlabels.formats import LOADERS
from stages._common import load_params, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path, help="data/raw/<dataset>")
    parser.add_argument("out", type=Path, help="data/prepared/<dataset>")
    args = parser.parse_args()
    spec = DATASETS[load_params().dataset]
    arrays = LOADERS[spec.format](args.raw, spec)
    prepared.save(args.out, arrays, spec.classes)
    print(f"{args.out}: train {arrays['x_train'].shape}, test {arrays['x_test'].shape}")


if __name__ == "__main__":
    run(main)
