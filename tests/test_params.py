"""params.yaml validation (fewlabels.params) and how a stage reports a bad value."""
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fewlabels.params import ParamError, validate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_are_valid(repo_params):
    assert validate(copy.deepcopy(repo_params)) == repo_params


def _set(params: dict, key: str | tuple, value) -> dict:
    """Set a nested key: 'a.b.c', or a tuple of parts when a part holds dots (file names)."""
    node = params
    *parents, last = key if isinstance(key, tuple) else key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return params


@pytest.mark.parametrize("key, value, named", [
    ("labeled_frac", 0, "labeled_frac"),
    ("labeled_frac", 1.5, "labeled_frac"),
    ("labeled_frac", "abc", "labeled_frac"),
    ("labeled_frac", True, "labeled_frac"),  # YAML `true` is an int in Python; it must not pass as 1
    ("labeled_frac", -0.1, "labeled_frac"),
    ("dataset", "imagenet", "dataset"),
    ("seed", 1.5, "seed"),
    ("seed", -1, "seed"),
    ("split.valid_frac", 1.0, "split.valid_frac"),
    ("split.valid_frac", 0, "split.valid_frac"),
    ("models", ["cnn", "resnet9000"], "models"),
    ("models", [], "models"),
    ("data.sources.fashion_mnist", ["ftp://x"], "data.sources.fashion_mnist"),
    ("data.sources.fashion_mnist", [], "data.sources.fashion_mnist"),
    (("data", "digests", "fashion_mnist", "train-images-idx3-ubyte.gz"), "sha1:abc",
     "data.digests.fashion_mnist.train-images-idx3-ubyte.gz"),
    (("data", "digests", "fashion_mnist", "t10k-labels-idx1-ubyte.gz"), None,
     "data.digests.fashion_mnist.t10k-labels-idx1-ubyte.gz"),
    ("data.timeout_s", 0, "data.timeout_s"),
    ("data.retries", -1, "data.retries"),
])
def test_bad_value_names_its_key(repo_params, key, value, named):
    params = _set(copy.deepcopy(repo_params), key, value)
    with pytest.raises(ParamError, match=f"params.yaml: {re.escape(named)}\\b") as err:
        validate(params)
    assert "\n" not in str(err.value)  # one line, for the stage's one-line error


def test_missing_key_is_named(repo_params):
    params = copy.deepcopy(repo_params)
    del params["split"]["valid_frac"]
    with pytest.raises(ParamError, match="missing key 'split.valid_frac'"):
        validate(params)


def test_only_the_selected_dataset_sources_are_checked(repo_params):
    # Sources of datasets not in use may be anything: a scenario switching dataset sets its own.
    params = _set(copy.deepcopy(repo_params), "data.sources.cifar10", ["ftp://x"])
    validate(params)
    with pytest.raises(ParamError, match="data.sources.cifar10"):
        validate(_set(params, "dataset", "cifar10"))


@pytest.mark.parametrize("stage", ["download", "index"])
def test_stage_with_bad_params_exits_with_one_line_and_writes_nothing(repo_params, tmp_path, stage):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_set(copy.deepcopy(repo_params), "labeled_frac", 1.5)))
    args = {"download": ["data/raw/x"],
            "index": ["data/prepared/x.npz", "data/split/train.npy", "data/index"]}[stage]
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "labeled_frac" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no data/ at all
