"""Stage download: fetch the dataset's raw files into data/raw/<dataset>/ (all or nothing)."""
import argparse

from fewlabels.atomic import atomic_path
from fewlabels.datasets import DATASETS
from fewlabels.download import fetch_all
from stages._common import layout, load_params, run


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    p = load_params()
    spec, paths = DATASETS[p.dataset], layout(p.dataset)
    files = {f.name: f.digest for f in spec.files.values()}
    with atomic_path(paths.raw, directory=True) as tmp:
        fetch_all(files, spec.max_file_bytes, p.data.sources[p.dataset], tmp, p.data.timeout_s, p.data.retries,
                  p.data.deadline_s)


if __name__ == "__main__":
    run(main)
