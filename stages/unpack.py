"""Stage unpack: parse the raw files into data/prepared/<dataset>/ (fewlabels.prepared: one .npy per array)."""
import argparse

from fewlabels import prepared
from fewlabels.datasets import DATASETS
from fewlabels.errors import DataError
from fewlabels.formats import LOADERS
from stages._common import layout, load_params, run


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    p = load_params()
    spec, paths = DATASETS[p.dataset], layout(p.dataset)
    arrays = LOADERS[spec.format](paths.raw, spec)
    for split in ("train", "test"):
        if not len(arrays[f"y_{split}"]):
            raise DataError(f"{paths.raw}: the {split} split holds no images; fetch the dataset again: "
                            f"rm -r {paths.raw} && dvc repro download")
    prepared.save(paths.prepared, arrays, spec.classes)
    print(f"{paths.prepared}: train {arrays['x_train'].shape}, test {arrays['x_test'].shape}")


if __name__ == "__main__":
    run(main)
