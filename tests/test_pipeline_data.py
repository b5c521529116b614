"""End to end: the data stages under `dvc repro` / `dvc exp run`, and the real Fashion-MNIST files."""
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

import fakes
from dvcrepo import REPO, commit, copy_pipeline, init, run, stages_run, stages_skipped, write_params
from fewlabels import params as schema
from fewlabels import prepared
from fewlabels.datasets import DATASETS, DEBIAN_FASHION_MNIST
from fewlabels.download import file_digest
from fewlabels.formats import load_idx_dataset
from fewlabels.splits import labeled_index, split_train_valid

pytestmark = pytest.mark.slow

REAL = Path(DEBIAN_FASHION_MNIST)
DATA_STAGES = ["check", "download", "unpack", "split", "index"]


@pytest.fixture
def project(tmp_path):
    """A fresh git + DVC repo holding a copy of the pipeline that trusts a fake Fashion-MNIST."""
    mirror = tmp_path / "mirror"
    arrays = fakes.make_idx_dataset(mirror, n_train=200, n_test=50)
    repo = copy_pipeline(tmp_path / "repo", {})
    fakes.pin_digests(repo, "fashion_mnist", mirror)
    init(repo)
    return repo, mirror, arrays


def _point_params_at(repo: Path, url: str) -> None:
    write_params(repo, {"dataset": "fashion_mnist", "labeled_frac": 1.0, "data.sources.fashion_mnist": [url],
                        "data.retries": 0})


def _check_outputs(repo: Path, arrays: dict, labeled_frac: float) -> None:
    """Every data output holds what it should, given the fake data the mirror served."""
    d = prepared.load(repo / "data/prepared/fashion_mnist", DATASETS["fashion_mnist"], *prepared.ARRAYS, "classes")
    np.testing.assert_array_equal(d["x_train"][:, 0], arrays["x_train"])
    np.testing.assert_array_equal(d["y_test"], arrays["y_test"])
    assert tuple(d["classes"]) == DATASETS["fashion_mnist"].classes
    labels = d["y_train"]
    train, valid = (np.load(repo / f"data/split/{n}.npy") for n in ("train", "valid"))
    assert np.intersect1d(train, valid).size == 0
    np.testing.assert_array_equal(np.union1d(train, valid), np.arange(len(arrays["y_train"])))
    labeled, unlabeled = (np.load(repo / f"data/index/{n}.npy") for n in ("labeled", "unlabeled"))
    assert np.intersect1d(labeled, unlabeled).size == 0
    np.testing.assert_array_equal(np.union1d(labeled, unlabeled), train)
    for c in range(10):
        assert np.sum(labels[labeled] == c) == round(labeled_frac * np.sum(labels[train] == c))


def test_data_stages_under_dvc(project):
    repo, mirror, arrays = project
    with fakes.serve(mirror) as url:
        _point_params_at(repo, url)
        first = run(repo, "dvc", "repro", "index")
        assert stages_run(first) == DATA_STAGES
        _check_outputs(repo, arrays, labeled_frac=1.0)
        assert np.load(repo / "data/index/unlabeled.npy").size == 0

        # Nothing changed: a second repro must not run anything.
        again = run(repo, "dvc", "repro", "index")
        assert stages_run(again) == [] and sorted(stages_skipped(again)) == sorted(DATA_STAGES)

    # The mirror is gone from here on: a stage that tried to download would fail.
    train_bytes = (repo / "data/split/train.npy").read_bytes()
    commit(repo, "data stages")  # dvc exp run needs a commit to start from
    exp = run(repo, "dvc", "exp", "run", "-S", "labeled_frac=0.5", "index")
    # labeled_frac is a param of index only: the upstream stages are skipped, not rerun (check reruns on
    # every edit of params.yaml, and its output is the same).
    assert stages_run(exp) == ["check", "index"]
    assert sorted(stages_skipped(exp)) == ["download", "split", "unpack"]
    assert (repo / "data/split/train.npy").read_bytes() == train_bytes
    _check_outputs(repo, arrays, labeled_frac=0.5)
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status", "index")

    # DVC writes -S values as YAML 1.2 (0.00001 becomes 1e-05); the stages read them the same way.
    exp = run(repo, "dvc", "exp", "run", "-S", "labeled_frac=0.75", "-S", "train.weight_decay=0.00001", "index")
    assert stages_run(exp) == ["check", "index"] and "weight_decay: 1e-05" in (repo / "params.yaml").read_text()
    _check_outputs(repo, arrays, labeled_frac=0.75)
    failed = run(repo, "dvc", "exp", "run", "-S", "labeled_frac=0.00005", "index", ok=False)
    assert "error: labeled_frac=5e-05 leaves no label for class(es)" in failed and "Traceback" not in failed


@pytest.mark.skipif(not REAL.is_dir(), reason=f"no real Fashion-MNIST at {REAL}")
def test_real_fashion_mnist_parses_like_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    spec = DATASETS["fashion_mnist"]
    files = {role: file.name for role, file in spec.files.items()}
    params = schema.load(REPO / "params.yaml")
    for file in spec.files.values():
        assert file_digest(REAL / file.name, file.digest, spec.max_file_bytes[file.name]) == file.digest, \
            f"fewlabels/datasets.py's digest of {file.name} does not match {REAL}"

    ours = load_idx_dataset(REAL, spec)
    for split, n in (("train", 60000), ("test", 10000)):
        plain = {}
        for kind in ("images", "labels"):
            plain[kind] = tmp_path / files[f"{split}_{kind}"].removesuffix(".gz")
            with gzip.open(REAL / files[f"{split}_{kind}"]) as src, open(plain[kind], "wb") as dst:
                shutil.copyfileobj(src, dst)
        assert ours[f"x_{split}"].shape == (n, 1, 28, 28)
        np.testing.assert_array_equal(ours[f"x_{split}"][:, 0], read_image_file(str(plain["images"])).numpy())
        np.testing.assert_array_equal(ours[f"y_{split}"], read_label_file(str(plain["labels"])).numpy())

    # The real split with the repo's settings: stratified to within one image per class.
    labels, valid_frac = ours["y_train"], params.split.valid_frac
    train, valid = split_train_valid(labels, valid_frac, params.seed)
    for c in range(10):
        n_c = np.sum(labels == c)
        assert abs(np.sum(labels[valid] == c) - valid_frac * n_c) <= 1
    labeled, _ = labeled_index(train, labels, 0.01, params.seed, DATASETS["fashion_mnist"].classes)
    assert len(labeled) == sum(round(0.01 * np.sum(labels[train] == c)) for c in range(10))
