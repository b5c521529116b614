"""The params schema (fewlabels.params): strict checking, YAML 1.2 as DVC reads it, and what derives from it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvcrepo import REPO, write_params
from fewlabels import engine, params
from fewlabels.errors import ParamError


@pytest.fixture
def raw() -> dict:
    return params.default_raw()


def check(raw: dict, *settings: str):
    """Validate `raw` with `key=value` overrides (values read as DVC's -S writes them)."""
    return params.validate(params.override(raw, list(settings)))


# what the repo ships ------------------------------------------------------------------------------

def test_the_default_params_yaml_reads_back_as_the_schemas_defaults(tmp_path):
    # (that the committed params.yaml is this text is `make check`'s job: a user's workspace may differ)
    (tmp_path / "params.yaml").write_text(params.default_yaml())
    assert params.load(tmp_path / "params.yaml") == params.Params()


def test_readme_params_table_is_generated_from_the_schema():
    assert params.markdown_table() in (REPO / "README.md").read_text(), (
        "README's params table is stale: paste `python -m fewlabels.params --markdown`")


def test_config_objects_are_the_schema():
    """The engine's config objects are the schema's classes, so their defaults are params.yaml's."""
    p = params.validate(params.default_raw())
    assert engine.TrainConfig is params.TrainConfig and engine.SSLConfig is params.SSLConfig
    assert params.TrainConfig() == p.train and params.SSLConfig() == p.ssl


# YAML 1.2, as DVC reads and writes params.yaml -------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("1e-05", 1e-05), ("5e-05", 5e-05), ("1e5", 1e5), ("0.001", 0.001), (".inf", float("inf")),
    ("true", True), ("[cnn, lenet]", ["cnn", "lenet"]), ("null", None), ("yes", "yes"), ("on", "on"),
])
def test_values_read_as_yaml_1_2(text, value):
    """DVC writes -S train.weight_decay=0.00001 as 1e-05: a float in YAML 1.2 (PyYAML's 1.1 reads a string);
    `yes`/`on` are strings in 1.2, not booleans."""
    assert params.parse_value(text) == value


def test_dvc_style_exponent_floats_validate(raw, tmp_path):
    (tmp_path / "params.yaml").write_text(
        params.default_yaml().replace("weight_decay: 0.0 ", "weight_decay: 1e-05"))
    assert params.load(tmp_path / "params.yaml").train.weight_decay == 1e-05
    assert check(raw, "labeled_frac=5e-05").labeled_frac == 5e-05


# one line naming the key -------------------------------------------------------------------------

@pytest.mark.parametrize("setting, message", [
    # typos: an unknown key is an error that suggests the closest known one
    ("train.learning_rate=0.1", "unknown key train.learning_rate; did you mean train.lr?"),
    ("labelled_frac=0.1", "unknown key labelled_frac; did you mean labeled_frac?"),
    ("ssl.treshold=0.5", "unknown key ssl.treshold; did you mean ssl.threshold?"),
    ("data.sources.imagenet=[http://x]", "data.sources.imagenet"),
    # floats are finite
    ("train.lr=.inf", "train.lr must be a finite number, got inf"),
    ("train.ema=.nan", "train.ema must be a finite number, got nan"),
    ("labeled_frac=.nan", "labeled_frac must be a finite number, got nan"),
    ("split.valid_frac=.nan", "split.valid_frac must be a finite number, got nan"),
    # booleans are booleans, integers are integers, numbers are numbers, list items have their type
    ("train.amp=1", "train.amp must be true or false, got 1"),
    ("train.channels_last=yes", "train.channels_last must be true or false, got 'yes'"),
    ("train.step_milestones=[true]", "train.step_milestones[0] must be an integer, got True"),
    ("train.step_milestones=[0]", "train.step_milestones[0] must be greater than or equal to 1, got 0"),
    ("train.epochs=10.0", "train.epochs must be an integer, got 10.0"),
    ("seed=1.5", "seed must be an integer, got 1.5"),
    ("seed=-1", "seed must be greater than or equal to 0, got -1"),
    ("labeled_frac=true", "labeled_frac must be a number, got True"),
    ("labeled_frac=abc", "labeled_frac must be a number, got 'abc'"),
    ("labeled_frac=0", "labeled_frac must be greater than 0, got 0"),
    ("labeled_frac=1.5", "labeled_frac must be less than or equal to 1, got 1.5"),
    ("split.valid_frac=1.0", "split.valid_frac must be less than 1, got 1.0"),
    ("data.timeout_s=0", "data.timeout_s must be greater than 0, got 0"),
    ("data.timeout_s=1e10", "data.timeout_s must be less than or equal to 3600, got 10000000000.0"),
    ("seed=false", "seed must be an integer, got False"),
    ("labeled_fraction=0.1", "unknown key labeled_fraction; did you mean labeled_frac?"),
    ("split.valid_fraction=0.2", "unknown key split.valid_fraction; did you mean split.valid_frac?"),
    ("seed\u200b=0", "unknown key 'seed\\u200b'; did you mean seed?"),
    ("data.retries=-1", "data.retries must be greater than or equal to 0, got -1"),
    ("ssl.unlabeled_ratio=0", "ssl.unlabeled_ratio must be greater than 0, got 0"),
    # numbers that size memory or time are bounded: a value no run can take is refused here, not mid-run
    ("train.lr=1e308", "train.lr must be less than or equal to 10, got 1e+308"),
    ("ssl.unlabeled_ratio=1e300", "ssl.unlabeled_ratio must be less than or equal to 64, got 1e+300"),
    ("train.weight_decay=1e10", "train.weight_decay must be less than or equal to 1, got 10000000000.0"),
    ("ssl.weight=1e9", "ssl.weight must be less than or equal to 100, got 1000000000.0"),
    (("train.epoch_steps=1000000", "train.batch_size=1024"), "train.epoch_steps x train.batch_size x "
                                                             "(1 + ssl.unlabeled_ratio) = 4.1e+09 images an epoch"),
    # choices
    ("dataset=imagenet", "dataset must be 'fashion_mnist', 'mnist' or 'cifar10', got 'imagenet'"),
    ("train.optimizer=rmsprop", "train.optimizer must be 'adam' or 'sgd', got 'rmsprop'"),
    ("models=[cnn, resnet9000]", "models[1] must be 'cnn', "),
    ("models=[bn_small, bn_small]", "models lists bn_small more than once"),
    ("models=[]", "models must have at least 1 item after validation, not 0"),
    ("data.sources.fashion_mnist=[ftp://x]", "data.sources.fashion_mnist[0] must be an https://, http:// or file:// URL"),
    ("data.sources.fashion_mnist=[]", "data.sources.fashion_mnist must list at least one mirror"),
    # schema-valid in form, malformed in fact: refused at the check in one line, not a traceback mid-download
    ("data.sources.mnist=[http://a..b/]", "data.sources.mnist[0] must be an https://, http:// or file:// URL: "
                                         "'a..b' is no host name"),
    ("data.sources.mnist=['http://[::1/x']", "data.sources.mnist[0] must be an https://, http:// or file:// URL: "
                                            "Invalid IPv6 URL"),
    ("data.sources.mnist=[http://x/\u00e9]", "data.sources.mnist[0] must be an https://, http:// or file:// URL: "
                                            "only printable ASCII"),
    (f"data.sources.mnist=[http://{'a' * 64}.org/]", "data.sources.mnist[0] must be an https://, http:// or "
                                                     f"file:// URL: '{'a' * 64}.org' is no host name"),
    ('data.sources.mnist=["http://x/\\0"]', "data.sources.mnist[0] must be an https://, http:// or file:// URL: "
                                           "only printable ASCII"),
    ("data.sources.mnist=['file:///etc/passwd#']", "data.sources.mnist[0] must be an https://, http:// or file:// "
                                                  "URL: no ?query or #fragment"),
    ("ssl.method=mean_teacher", "ssl.method mean_teacher needs a teacher: set train.ema"),
    ("ssl.dist_align=true", "ssl.dist_align works with ssl.method fixmatch or flexmatch, not skip: "
                            "set ssl.dist_align to false"),
    ("train.nesterov=true", "train.nesterov needs train.optimizer sgd and train.momentum above 0"),
    (("train.scheduler=step", "train.epochs=3"), "train.step_milestones [3] are not before the last of "
                                                 "train.epochs (3), so they would never apply"),
    (("dataset=mnist", "evaluate.tta=mirror"), "evaluate.tta=mirror averages each image with its mirror image, "
                                               "which in mnist shows another class: set evaluate.tta to none"),
    ("evaluate.tta=rotate", "evaluate.tta must be 'none' or 'mirror', got 'rotate'"),
    (("dataset=mnist", "ssl.lp_mirror=true"), "ssl.lp_mirror embeds each image with its mirror image, which in mnist "
                                              "shows another class: set ssl.lp_mirror to false"),
])
def test_bad_setting_is_one_line_naming_the_key(raw, setting, message):
    with pytest.raises(ParamError) as err:
        check(raw, *(setting if isinstance(setting, tuple) else (setting,)))
    assert str(err.value).startswith(f"params.yaml: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_sources_of_every_dataset_are_checked(raw):
    """Not only the selected dataset's: a scenario that switches `dataset` must not find a bad mirror list then."""
    with pytest.raises(ParamError, match="data.sources.cifar10"):
        check(raw, "data.sources.cifar10=[ftp://x]")


@pytest.mark.parametrize("key", ["split.valid_frac", "train.ema", "ssl"])
def test_a_missing_key_is_named_with_its_default(raw, key):
    *sections, last = key.split(".")
    node = raw
    for part in sections:
        node = node[part]
    del node[last]
    with pytest.raises(ParamError, match=f"missing key {key} \\(default: "):
        params.validate(raw)


def test_an_override_needs_key_and_value(raw):
    with pytest.raises(ParamError, match="expected key=value"):
        params.override(raw, ["train.lr"])
    assert params.override(raw, ["train.lr=3e-3", "models=[lenet]"])["train"]["lr"] == 0.003


# the stages ---------------------------------------------------------------------------------------

def run_stage(cwd: Path, stage: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stage", ["check", "download", "index"])
@pytest.mark.parametrize("params_text, message", [
    (None, "error: params.yaml: labeled_frac must be less than or equal to 1, got 1.5"),
    ("seed: 0\ntrain: [unclosed\n", "error: params.yaml line 3: "),
    ("", "error: params.yaml: expected a mapping of settings at the top level, got NoneType"),
])
def test_stage_with_bad_params_exits_with_one_line_and_writes_nothing(tmp_path, stage, params_text, message):
    if params_text is None:
        write_params(tmp_path, {}).write_text(params.default_yaml().replace(
            "labeled_frac: 1.0", "labeled_frac: 1.5"))
    else:
        (tmp_path / "params.yaml").write_text(params_text)
    result = run_stage(tmp_path, stage)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(message), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no data/ at all


def test_stage_without_params_yaml_says_where_to_run(tmp_path):
    result = run_stage(tmp_path, "index")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: params.yaml not found: run from the project's root, where params.yaml is"


def _check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fewlabels.params", "--check", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    """463 bytes that expand to 9**9 strings (gigabytes) once composed: refused at the first alias."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    (tmp_path / "params.yaml").write_text("\n".join(lines) + "\n")
    result = _check(tmp_path / "params.yaml")
    assert result.returncode == 1
    assert result.stderr == (f"error: {tmp_path / 'params.yaml'} line 2: YAML aliases (*name) are not accepted in "
                             "params.yaml: write the value out\n")


@pytest.mark.parametrize("text, message", [
    # YAML 1.1 would read `yes` as true and `010` as 8, past the strict schema
    ("%YAML 1.1\n---\n" + "seed: 010\n", "line 1: YAML directives (%YAML, %TAG) are not accepted"),
    ("# settings\n%TAG ! tag:example.com,2000:\n---\nseed: 0\n", "line 2: YAML directives (%YAML, %TAG)"),
    ("seed: " + "[" * 330 + "]" * 330 + "\n", "line 1: nested far deeper than settings are"),
    ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 40)), "line 16: nested far deeper than settings are"),
])
def test_directives_and_deep_nesting_are_one_line_before_anything_is_built(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    result = _check(tmp_path / "params.yaml")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'params.yaml'} {message}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_huge_params_file_is_refused_unread(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 0\n" + "#" * (2 << 20) + "\n")
    result = _check(tmp_path / "params.yaml")
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'params.yaml'}: larger than 1 MiB; it holds settings only\n"
