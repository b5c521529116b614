"""Load params.yaml and validate every setting before any stage does work.

A bad value raises ParamError with one line naming the key and the fix; stages turn it into
a non-zero exit before writing anything.
"""
from pathlib import Path

import yaml

from fewlabels.datasets import DATASETS


class ParamError(ValueError):
    pass


def _get(params: dict, key: str):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamError(f"params.yaml: missing key '{key}'")
        node = node[part]
    return node


def _number(params, key, lo, hi, lo_open=False, hi_open=False, integer=False):
    value = _get(params, key)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if integer else "a number"
        raise ParamError(f"params.yaml: {key} must be {want}, got {value!r}")
    too_low = value <= lo if lo_open else value < lo
    too_high = value >= hi if hi_open else value > hi
    if too_low or too_high:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ParamError(f"params.yaml: {key} must be in {interval}, got {value!r}")
    return value


def _choice(params, key, options):
    value = _get(params, key)
    if value not in options:
        raise ParamError(f"params.yaml: {key} must be one of {', '.join(map(str, options))}; got {value!r}")
    return value


INF = float("inf")
OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("none", "step", "plateau", "onecycle")
DEVICES = ("auto", "cpu", "cuda")
SELECT_METRICS = ("valid_acc", "valid_loss")
SSL_METHODS = ("skip", "pseudo_label", "fixmatch", "mean_teacher")
AUGMENT_POLICIES = ("none", "crop", "flip_crop", "flip_crop_cutout")


def validate(params: dict) -> dict:
    """Check every setting; return params unchanged or raise ParamError."""
    dataset = _choice(params, "dataset", tuple(DATASETS))
    _number(params, "seed", 0, 2**32 - 1, integer=True)
    _number(params, "labeled_frac", 0, 1, lo_open=True)
    _number(params, "split.valid_frac", 0, 1, lo_open=True, hi_open=True)
    _number(params, "data.timeout_s", 0, INF, lo_open=True)
    _number(params, "data.retries", 0, 100, integer=True)
    sources = _get(params, f"data.sources.{dataset}")
    if not isinstance(sources, list) or not sources:
        raise ParamError(f"params.yaml: data.sources.{dataset} must be a non-empty list of base URLs")
    for url in sources:
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "file://")):
            raise ParamError(f"params.yaml: data.sources.{dataset} entries must start with https://, http:// or file://; got {url!r}")
    digests = _get(params, f"data.digests.{dataset}")
    for name in DATASETS[dataset].files.values():
        digest = digests.get(name) if isinstance(digests, dict) else None
        if not isinstance(digest, str) or digest.partition(":")[0] not in ("md5", "gunzip-sha256"):
            raise ParamError(f"params.yaml: data.digests.{dataset}.{name} must be 'md5:<hex>' or 'gunzip-sha256:<hex>'; got {digest!r}")
    validate_models(params)
    validate_train(params)
    validate_ssl(params)
    return params


def validate_ssl(params: dict) -> None:
    _choice(params, "ssl.method", SSL_METHODS)
    _number(params, "ssl.threshold", 0, 1)
    _number(params, "ssl.weight", 0, INF)
    _number(params, "ssl.warmup_epochs", 0, 10**6, integer=True)
    if _get(params, "ssl.unlabeled_ratio") is not None:
        _number(params, "ssl.unlabeled_ratio", 0, INF, lo_open=True)
    if _get(params, "ssl.method") == "mean_teacher" and not _get(params, "train.ema"):
        raise ParamError("params.yaml: ssl.method mean_teacher needs a teacher: set train.ema to a decay such as 0.99")


# The names in fewlabels.models.MODELS, repeated here so that checking params does not import torch
# (about 2 s in every stage); tests/test_models.py checks that the two lists agree.
MODEL_NAMES = ("cnn", "adaptive_cnn", "simple_cnn", "bn_cnn", "lenet", "cifar_relu", "cifar_tanh",
               "bn_small", "bn_wide", "vgg_bn")


def validate_models(params: dict) -> None:
    models = _get(params, "models")
    if not isinstance(models, list) or not models:
        raise ParamError("params.yaml: models must be a non-empty list of model names")
    for name in models:
        if name not in MODEL_NAMES:
            raise ParamError(f"params.yaml: models: unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")


def validate_train(params: dict) -> None:
    _choice(params, "train.optimizer", OPTIMIZERS)
    _number(params, "train.lr", 0, INF, lo_open=True)
    _number(params, "train.momentum", 0, 1, hi_open=True)
    _number(params, "train.weight_decay", 0, INF)
    _number(params, "train.batch_size", 1, 2**20, integer=True)
    _number(params, "train.epochs", 1, 10**6, integer=True)
    _choice(params, "train.scheduler", SCHEDULERS)
    milestones = _get(params, "train.step_milestones")
    if not isinstance(milestones, list) or not all(isinstance(m, int) and m >= 1 for m in milestones):
        raise ParamError(f"params.yaml: train.step_milestones must be a list of epoch numbers >= 1, got {milestones!r}")
    _number(params, "train.patience", 1, 10**6, integer=True)
    _choice(params, "train.select_metric", SELECT_METRICS)
    _number(params, "train.label_smoothing", 0, 1, hi_open=True)
    _choice(params, "train.device", DEVICES)
    _choice(params, "train.amp", (True, False))
    _choice(params, "train.augment", AUGMENT_POLICIES)
    _choice(params, "train.channels_last", (True, False))
    _number(params, "train.ema", 0, 1, hi_open=True)


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate params.yaml."""
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ParamError(f"{path}: expected a mapping of settings at the top level")
    return validate(params)
