"""Stage download: fetch the dataset's raw files into data/raw/<dataset>/ (all or nothing)."""
import argparse
from pathlib import Path

from fewlabels.atomic import atomic_path
from fewlabels.datasets import DATASETS
from fewlabels.download import DownloadError, fetch_all
from stages._common import clear_errors, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="data/raw/<dataset>")
    args = parser.parse_args()
    p = load_params()
    dataset = p["dataset"]
    files = {name: p["data"]["digests"][dataset][name] for name in DATASETS[dataset].files.values()}
    with clear_errors(DownloadError), atomic_path(args.out, directory=True) as tmp:
        fetch_all(files, p["data"]["sources"][dataset], tmp, p["data"]["timeout_s"], p["data"]["retries"])


if __name__ == "__main__":
    main()
