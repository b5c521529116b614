"""The params schema: the one definition of every setting in params.yaml (type, bounds, default, meaning).

Validation, the engine's config objects (TrainConfig, SSLConfig), params.yaml itself and the README's
params table all come from these classes: `python -m fewlabels.params --yaml` prints the default
params.yaml, `--markdown` the README table (tests/test_params.py checks both are current).

params.yaml is read as YAML 1.2 with ruamel.yaml, as DVC reads it, so what `dvc exp run -S` writes
(`1e-05`, `.inf`) means here what it means to DVC. Checking params never imports torch (~2 s a stage).
"""
import argparse
import difflib
import io
import ipaddress
import re
import sys
import typing
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent

from fewlabels import registry
from fewlabels.datasets import DATASETS
from fewlabels.errors import ParamError

# The choices come from the registry itself (torch-free and code-free: fewlabels.registry).
Dataset = Literal[tuple(DATASETS)]
ModelName = Literal[tuple(registry.MODELS)]
Optimizer = Literal[tuple(registry.OPTIMIZERS)]
Scheduler = Literal[tuple(registry.SCHEDULERS)]
AugmentPolicy = Literal[tuple(registry.AUGMENTS)]
SSLMethod = Literal[tuple(registry.METHODS)]
StrongAugment = Literal[tuple(registry.STRONG_VIEWS)]

PATTERNS = {  # regular expression -> what it asks for, in words (for error messages)
    r"^(https|http|file)://\S+$": "an https://, http:// or file:// URL",
    r"^$|^[\w.-]+:\d+$": "host:port (or empty for one host)",
    r"^[\w.-]+$": "letters, digits, '.', '_' or '-'",
}
Endpoint, RunName = (Annotated[str, Field(pattern=pattern)] for pattern in list(PATTERNS)[1:])
HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # RFC 1123: 1 to 63, no '-' at the ends


def mirror_problem(url: str) -> str | None:
    """What makes `url` (already of PATTERNS' first form) no mirror base URL, in a few words; None if it is one.
    The download appends file names to it, so it has no ?query or #fragment (`file:///etc/passwd#` would
    open /etc/passwd); a file:// URL names a local directory; an http(s):// one a host name or IP address."""
    if not (url.isascii() and url.isprintable()):
        return "only printable ASCII (percent-encode the rest)"
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port out of range
    except ValueError as err:  # an unclosed [IPv6 address, a bad port
        return str(err)
    if "?" in url or "#" in url:
        return "no ?query or #fragment: file names are appended to a mirror's URL"
    if parts.scheme == "file":
        return None if parts.netloc in ("", "localhost") else "a file:// URL names a local directory: file:///path"
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not host or not all(HOST_LABEL.fullmatch(label) for label in host.split(".")):
        return f"{host!r} is no host name (labels of 1 to 63 letters, digits or '-', joined by single dots)"
    return None


def _mirror(url: str) -> str:
    problem = mirror_problem(url)
    if problem:
        raise PydanticCustomError("mirror_url", "must be an https://, http:// or file:// URL: {problem}",
                                  {"problem": problem})
    return url


MirrorURL = Annotated[str, Field(pattern=list(PATTERNS)[0]), AfterValidator(_mirror)]


# The sampler holds an epoch's batches as one index tensor: 10^8 int64 indices are 0.8 GB (the default epoch
# draws 844 x 64 x 4 = 216,064).
MAX_EPOCH_INDICES = 10**8


class Section(BaseModel):
    """Strict: unknown keys are errors, floats are finite, ints are ints and booleans are booleans."""
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class DataConfig(Section):
    sources: dict[Dataset, list[MirrorURL]] = Field(
        {name: list(spec.mirrors) for name, spec in DATASETS.items()},
        description="mirrors tried in order for each dataset: https://, http:// or file:// base URLs. Defaults from "
                    "fewlabels/datasets.py, written out so `dvc exp run -S data.sources.mnist=[...]` replaces a "
                    "list and `dvc params diff` shows it; the digests stay in datasets.py: a mirror changes where "
                    "files come from, not which are kept")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="seconds a network read may wait")
    retries: int = Field(2, ge=0, le=100, description="extra attempts per mirror after a network error")
    deadline_s: float = Field(1800.0, gt=0, le=86400, description="seconds one file may take from one mirror, "
                                                                  "however slowly it trickles; then the next")


class SplitConfig(Section):
    valid_frac: float = Field(0.1, gt=0, lt=1, description="stratified share of the training set held out for validation")


class TrainConfig(Section):
    """How the train stage fits a model (params.yaml `train:`)."""
    optimizer: Optimizer = Field("adam", description=f"optimizer: {registry.OPTIMIZERS.describe()}")
    lr: float = Field(0.003, gt=0, le=10, description="learning rate (the peak rate for onecycle); at most 10, "
                                                      "far above any rate that trains (1e-4 to 1)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd momentum")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum (published FixMatch)")
    weight_decay: float = Field(0.0, ge=0, le=1, description="L2 penalty coefficient; at most 1 (more shrinks the "
                                                             "weights faster than any gradient grows them)")
    batch_size: int = Field(128, ge=1, le=2**20, description="images per batch (labeled and unlabeled alike); "
                                                          "larger than the labeled set: one batch of all of it")
    epochs: int = Field(4, ge=1, le=10**6, description="epochs: each ends with validation, early stopping and a resume "
                                                       "checkpoint")
    epoch_steps: Annotated[int, Field(ge=1, le=10**7)] | None = Field(
        None, description="optimizer steps (labeled batches) per epoch, drawn from as many shuffled passes over the "
                          "labeled images as they take; null: one pass over the whole train split's worth (422 for "
                          "Fashion-MNIST at batch 128), the same budget at every labeled_frac")
    scheduler: Scheduler = Field("onecycle", description=f"learning-rate schedule: {registry.SCHEDULERS.describe()}")
    step_milestones: list[Annotated[int, Field(ge=1, le=10**6)]] = Field(
        [2, 3], description="epochs (1-based) after which the step schedule divides the learning rate by 10")
    patience: int = Field(5, ge=1, le=10**6, description="early stopping: epochs without a lower valid loss (none with "
                                                       "select_metric last, which keeps the run's end)")
    select_metric: Literal["valid_acc", "valid_loss", "last"] = Field(
        "last", description="the checkpoint kept: the epoch with the best valid_acc or valid_loss (on the "
                                 "labeled_frac of validation labels the run may use), or the last epoch run")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the labeled cross-entropy")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto: CUDA when torch sees a GPU, else Apple's GPU (mps), else the CPU; a named GPU "
                            "torch does not see is an error")
    amp: bool = Field(True, description="bf16 autocast on CUDA")
    cpu_bf16: bool = Field(True, description="bf16 autocast on the CPU, where it has bf16 matrix units (AMX, "
                                              "AVX-512 BF16: detected; float32 on other CPUs)")
    augment: AugmentPolicy = Field(
        "none", description=f"labeled batches (and the weak view): {registry.AUGMENTS.describe()}")
    channels_last: bool = Field(True, description="NHWC memory layout for the convolutions")
    ema: float = Field(0.0, ge=0, lt=1, description="decay per step of a weight average that is validated, "
                                                    "saved and used as the teacher (see ssl.ema_teacher); 0: off")


class EvaluateConfig(Section):
    """How the evaluate stage scores a trained model (params.yaml `evaluate:`)."""
    tta: Literal["none", "mirror"] = Field(
        "none", description="test-time augmentation: none, or mirror (each image's class probabilities averaged with "
                            "its left-right mirror image's; not for digits)")


class SSLConfig(Section):
    """What unlabeled batches do (params.yaml `ssl:`)."""
    method: SSLMethod = Field("skip", description=", ".join(f"{name} ({spec.meaning})"
                                                            for name, spec in registry.METHODS.items()))
    threshold: float = Field(0.95, ge=0, le=1, description="confidence a prediction needs to become a pseudo-label "
                                                           "(flexmatch: that of its best-learnt class; freematch: "
                                                           "unused)")
    weight: float = Field(1.0, ge=0, le=100, description="unlabeled loss weight relative to the labeled cross-entropy; "
                                                         "at most 100")
    warmup_epochs: int = Field(1, ge=0, le=10**6, description="the unlabeled weight ramps linearly from 0 over these epochs")
    unlabeled_ratio: Annotated[float, Field(gt=0, le=64)] | None = Field(
        3.0, description="unlabeled batches per labeled batch each epoch, at most 64 (FixMatch uses 7); null: every "
                         "unlabeled image once")
    strong: StrongAugment = Field(
        "affine_jitter_cutout", description="the student's view of an unlabeled batch, after train.augment: "
                                            f"{registry.STRONG_VIEWS.describe()}")
    dist_align: bool = Field(False, description="fixmatch, flexmatch: align the teacher's class probabilities to "
                                                "a uniform class distribution (USB's DistAlignEMAHook)")
    stats_ema: float = Field(0.999, ge=0, lt=1, description="decay per unlabeled batch of the running class "
                                                           "statistics of freematch and dist_align (USB: 0.999 a "
                                                           "step)")
    fairness_weight: float = Field(0.01, ge=0, le=100, description="freematch: weight of its self-adaptive fairness "
                                                                   "loss; at most 100")
    lp_knn: int = Field(50, ge=1, le=1000, description="label_propagation: neighbours of each image in the graph")
    lp_alpha: float = Field(0.99, gt=0, lt=1, description="label_propagation: how far labels diffuse (the weight "
                                                          "of the graph against the labeled images)")
    lp_mirror: bool = Field(False, description="label_propagation: embed each image as the mean of its and its mirror "
                                               "image's features (not for digits)")
    lp_strong: bool = Field(False, description="label_propagation: learn the propagated labels on the strong view "
                                               "(ssl.strong) of an unlabeled batch instead of the weak one")
    ema_teacher: bool = Field(True, description="with train.ema on, the weight average makes the pseudo-labels; "
                                                "false: the model being trained does (published FixMatch)")


class DistConfig(Section):
    """How many processes train one model (torchrun); the train stage starts torchrun itself when > 1."""
    nproc_per_node: int = Field(1, ge=1, le=1024, description="training processes per host (one per GPU); 1: a "
                                                              "plain process, as before")
    nnodes: int = Field(1, ge=1, le=1024, description="hosts training one model together; > 1 needs rdzv_endpoint, "
                                                      "and the stage on each other host needs --node-rank")
    rdzv_endpoint: Endpoint = Field("", description="host:port of node 0, the host that runs dvc (its rank 0 writes "
                                                    "the outputs); every host must reach it")
    rdzv_id: RunName = Field("fewlabels", description="names one multi-host run: the same on its hosts")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class Params(Section):
    """params.yaml. Top-level keys are the ones scenarios override: `dvc exp run -S labeled_frac=0.1`."""
    dataset: Dataset = Field("fashion_mnist", description="fashion_mnist, mnist or cifar10")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="feeds every random choice: split, index, "
                                                         "initialisation, batch order, augmentation")
    labeled_frac: float = Field(1.0, gt=0, le=1, description="fraction of all training labels a run may use: of "
                                                             "the train split's and, stratified, of the validation "
                                                             "split's (the rest of validation is dropped)")
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    models: list[ModelName] = Field(["cnn", "bn_cnn"], min_length=1,
                                    description="registry models that `dvc repro` trains and compares")
    train: TrainConfig = TrainConfig()
    ssl: SSLConfig = SSLConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    dist: DistConfig = DistConfig()

    @field_validator("models")
    @classmethod
    def _distinct(cls, models):
        repeated = sorted({m for m in models if models.count(m) > 1})
        if repeated:
            raise ValueError(f"models lists {', '.join(repeated)} more than once: each model trains once")
        return models

    @model_validator(mode="after")
    def _consistent(self):
        if not self.data.sources.get(self.dataset):
            raise ValueError(f"data.sources.{self.dataset} must list at least one mirror for dataset {self.dataset}")
        if self.dist.nnodes > 1 and not self.dist.rdzv_endpoint:
            raise ValueError("dist.nnodes > 1 needs dist.rdzv_endpoint: host:port of the host that runs dvc, e.g. node0:29400")
        conflict = registry.conflict(self.ssl.method, self.train.ema, self.ssl.ema_teacher, self.ssl.dist_align)
        if conflict:
            raise ValueError(conflict)
        if self.evaluate.tta == "mirror" and not DATASETS[self.dataset].mirror_safe:
            raise ValueError(f"evaluate.tta=mirror averages each image with its mirror image, which in {self.dataset} "
                             "shows another class: set evaluate.tta to none")
        if self.ssl.lp_mirror and not DATASETS[self.dataset].mirror_safe:
            raise ValueError(f"ssl.lp_mirror embeds each image with its mirror image, which in {self.dataset} shows "
                             "another class: set ssl.lp_mirror to false")
        late = [m for m in self.train.step_milestones if m >= self.train.epochs]
        if self.train.scheduler == "step" and late:
            raise ValueError(f"train.step_milestones {late} are not before the last of train.epochs "
                             f"({self.train.epochs}), so they would never apply: lower them or raise train.epochs")
        drawn = (self.train.epoch_steps or 0) * self.train.batch_size * (1 + (self.ssl.unlabeled_ratio or 0))
        if drawn > MAX_EPOCH_INDICES:
            raise ValueError(f"train.epoch_steps x train.batch_size x (1 + ssl.unlabeled_ratio) = {drawn:.3g} images an "
                             f"epoch, more than the {MAX_EPOCH_INDICES:.0e} whose indices fit in memory: lower them")
        if self.train.nesterov and (self.train.optimizer != "sgd" or not self.train.momentum):
            raise ValueError("train.nesterov needs train.optimizer sgd and train.momentum above 0")
        return self


# Reading and checking -----------------------------------------------------------------------------

# Nodes composed inside one another (about two per level of nesting): params.yaml's settings are 3 levels deep;
# a deeper file is refused long before Python's recursion limit
MAX_DEPTH = 32


class _NoAliases(Composer):
    """Refuses the first alias (`*name`) before it is composed: a few hundred bytes of nested aliases expand to
    gigabytes (a "billion laughs"), and settings never need them. Refuses nesting deeper than MAX_DEPTH too."""
    depth = 0

    def compose_node(self, parent, index):
        if self.parser.check_event(AliasEvent):
            raise ComposerError(None, None, "YAML aliases (*name) are not accepted in params.yaml: write the value out",
                                self.parser.peek_event().start_mark)
        if self.depth >= MAX_DEPTH:
            raise ComposerError(None, None, "nested far deeper than settings are (params.yaml's are 3 levels deep)",
                                self.parser.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _yaml() -> YAML:
    yaml = YAML(typ="safe", pure=True)  # YAML 1.2, as DVC reads params.yaml (ruamel.yaml)
    yaml.Composer = _NoAliases
    return yaml


def parse_value(text: str):
    """A value written on the command line (`train.lr=1e-05`, `models=[cnn, lenet]`), read as YAML 1.2."""
    return _yaml().load(text)


def _key(loc) -> str:
    """('train', 'step_milestones', 0) -> 'train.step_milestones[0]'."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p != "[key]").lstrip(".")


def _fields(model: type[BaseModel], prefix: str) -> dict[str, str]:
    """{dotted key: description} of a section's own fields, for suggestions."""
    return {prefix + name: f.description or "" for name, f in model.model_fields.items()}


def _unknown(key: str, name: str, known, prefix: str, meanings: dict[str, str] | None = None) -> str:
    """'unknown key X; did you mean Y?': the closest known key by name, or by the start of its meaning
    (train.learning_rate -> train.lr, whose meaning starts 'learning rate')."""
    def score(candidate):
        by_name = difflib.SequenceMatcher(None, name, candidate).ratio()
        meaning = (meanings or {}).get(prefix + candidate, "")[:len(name)]
        return max(by_name, difflib.SequenceMatcher(None, name.replace("_", " "), meaning).ratio())
    best = max(known, key=score, default=None)
    hint = f"; did you mean {prefix}{best}?" if best is not None and score(best) >= 0.6 else ""
    shown = key if key.isascii() and key.isprintable() else ascii(key)  # a zero-width space shows as \u200b
    return f"unknown key {shown}{hint}"


def _section_at(loc) -> tuple[type[BaseModel], str]:
    """The schema class holding the key at `loc`, and that class's dotted prefix."""
    model, prefix = Params, ""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        model, prefix = field.annotation, f"{prefix}{part}."
    return model, prefix


def _describe(err: dict) -> str:
    """One pydantic error -> one line naming the key: 'train.lr must be a finite number, got nan'."""
    key, kind, value = _key(err["loc"]), err["type"], err.get("input")
    if kind == "extra_forbidden":
        model, prefix = _section_at(err["loc"])
        return _unknown(key, str(err["loc"][-1]), list(model.model_fields), prefix, _fields(model, prefix))
    if kind == "value_error":  # our own validators: their message is already the whole line
        return err["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"missing key {key}"
    wanted = {"float_type": "a number", "int_type": "an integer", "bool_type": "true or false",
              "string_type": "text", "list_type": "a list", "dict_type": "a mapping of keys to values",
              "model_type": "a mapping of keys to values", "finite_number": "a finite number",
              "int_from_float": "an integer"}.get(kind)
    if kind == "string_pattern_mismatch":
        wanted = PATTERNS[err["ctx"]["pattern"]]
    rule = f"must be {wanted}" if wanted else re.sub(r"^\w+ should", "must", err["msg"])
    shown = repr(value)  # escaped; and bounded, so a megabyte of value is no megabyte of error
    return f"{key or 'the top level'} {rule}, got {shown if len(shown) <= 200 else shown[:197] + '...'}"


def _missing(raw: dict, model: type[BaseModel] = Params, prefix: str = "") -> list[str]:
    """Keys of the schema that params.yaml leaves out. Every key must be written out: DVC tracks keys one
    by one, and a setting filled in silently would not show in `dvc params diff` or `dvc exp show`."""
    out = []
    for name, field in model.model_fields.items():
        if name not in raw:
            out.append(prefix + name)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) and isinstance(raw[name], dict):
            out += _missing(raw[name], field.annotation, f"{prefix}{name}.")
    return out


def validate(raw, source: str = "params.yaml") -> Params:
    """Check every setting of a params.yaml mapping; the Params it holds, or ParamError with one line."""
    if not isinstance(raw, dict):
        raise ParamError(f"{source}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ParamError(f"{source}: {_describe(first)}{more}") from None
    missing = _missing(raw)
    if missing:
        raise ParamError(f"{source}: missing key {missing[0]} (default: {_default(missing[0])!r})"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return params


def _default(key: str):
    node = Params()
    for part in key.split("."):
        node = getattr(node, part)
    return node.model_dump() if isinstance(node, BaseModel) else node


MAX_BYTES = 1 << 20  # params.yaml is ~3 KB: a bound on what reading a hostile one may cost


def _directive_line(text: str) -> int | None:
    """The line number of a YAML directive (`%YAML 1.1` would bring back YAML 1.1's `yes` and octal `010`
    past the schema), or None. Directives come before a document's content; a `%` line later is no directive."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("%"):
            return number
        if line.strip() and not line.lstrip().startswith("#") and line.strip() != "---":
            return None
    return None


def read(path: str | Path = "params.yaml") -> dict:
    """params.yaml as a plain mapping, unchecked: a YAML error is one line with the line number (aliases
    included, refused before anything is built)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ParamError(f"{path} not found: run from the project's root, where params.yaml is") from None
    if len(data) > MAX_BYTES:
        raise ParamError(f"{path}: larger than {MAX_BYTES >> 20} MiB; it holds settings only")
    try:
        text = data.decode("utf-8")
        directive = _directive_line(text)
        if directive:
            raise ParamError(f"{path} line {directive}: YAML directives (%YAML, %TAG) are not accepted: params.yaml "
                             "is read as YAML 1.2, as DVC reads it; remove the line")
        return _yaml().load(text)
    except UnicodeDecodeError as err:
        raise ParamError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamError(f"{path}{where}: {err.problem or err.context}") from None


def load(path: str | Path = "params.yaml") -> Params:
    """Read and check params.yaml."""
    return validate(read(path), str(path))


def set_key(raw: dict, key: str, value) -> dict:
    """Set a dotted key (`train.lr`) in a params mapping, creating sections as needed; returns `raw`."""
    *sections, last = key.split(".")
    node = raw
    for part in sections:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParamError(f"cannot set {key}: {part} is not a section")
    node[last] = value
    return raw


def split_override(pair: str) -> tuple[str, str]:
    """'train.lr=1e-05' -> ('train.lr', '1e-05'): a command-line override, as `dvc exp run -S` takes it."""
    key, sep, text = pair.partition("=")
    if not sep or not key:
        raise ParamError(f"expected key=value (as for dvc exp run -S), got {pair!r}")
    return key, text


def override(raw: dict, pairs: list[str]) -> dict:
    """Apply `key=value` overrides to a params mapping (in place; returned); values read as YAML 1.2."""
    for key, text in map(split_override, pairs):
        set_key(raw, key, parse_value(text))
    return raw


def write(raw: dict, path: str | Path) -> None:
    """Write a params mapping as YAML 1.2 (for scratch repositories and tests)."""
    with open(path, "w") as f:
        YAML().dump(raw, f)


# Documents derived from the schema --------------------------------------------------------------

def _flat(model: type[BaseModel], prefix: str = ""):
    """(dotted key, field) for every setting, depth first in declaration order."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _flat(field.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name, field


def _type_name(annotation) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if typing.get_origin(annotation) is Annotated:
        return _type_name(args[0])
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType")):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if typing.get_origin(annotation) in (list, dict):
        return {list: "list", dict: "mapping"}[typing.get_origin(annotation)]
    return annotation.__name__


def _bounds(field) -> str:
    marks = {}
    for meta in field.metadata:
        for name in ("gt", "ge", "lt", "le"):
            if getattr(meta, name, None) is not None:
                marks[name] = getattr(meta, name)
    if not marks:
        return ""
    lo = f"({marks['gt']}" if "gt" in marks else f"[{marks['ge']}" if "ge" in marks else "(-inf"
    hi = f"{marks['lt']})" if "lt" in marks else f"{marks['le']}]" if "le" in marks else "inf)"
    return f" in {lo}, {hi}"


def markdown_table() -> str:
    """The README's params table."""
    defaults = Params().model_dump()
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, field in _flat(Params):
        value = defaults
        for part in key.split("."):
            value = value[part]
        shown = "see params.yaml" if isinstance(value, dict) else f"`{_flow(value)}`"
        rows.append(f"| `{key}` | {_type_name(field.annotation)}{_bounds(field)} | {shown} | {field.description} |")
    return "\n".join(rows) + "\n"


def _flow(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if value == "":
        return "''"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def _commented(model: BaseModel) -> CommentedMap:
    out = CommentedMap()
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[name] = _commented(value)
            if field.description:
                out.yaml_set_comment_before_after_key(name, before=field.description, indent=0)
        else:
            out[name] = _block(value)
            out.yaml_add_eol_comment(field.description or "", name, column=27)
    return out


def _block(value):
    """Lists of scalars in flow style ([5, 8]); everything else in block style."""
    if isinstance(value, list) and not any(isinstance(v, (list, dict)) for v in value):
        value = CommentedSeq(value)
        value.fa.set_flow_style()
    return value


YAML_HEADER = """\
# The pipeline's settings. Every key is defined, with its type, bounds and meaning, in fewlabels/params.py;
# this file is its defaults (`python -m fewlabels.params --yaml > params.yaml` rewrites it).
# Change a value here, or per experiment: dvc exp run -S labeled_frac=0.1 -S train.lr=0.003
"""


def default_yaml() -> str:
    out = io.StringIO()
    yaml = YAML()
    yaml.width = 200  # long digests stay on one line
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.dump(_commented(Params()), out)
    return YAML_HEADER + out.getvalue()


def default_raw() -> dict:
    """default_yaml() read back as read() reads params.yaml: the settings of a fresh clone, whatever the
    workspace's params.yaml holds now."""
    return _yaml().load(default_yaml())


def main() -> None:
    parser = argparse.ArgumentParser(description="Print a document derived from the params schema.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--yaml", action="store_true", help="the default params.yaml")
    what.add_argument("--markdown", action="store_true", help="the README's params table")
    what.add_argument("--check", type=Path, metavar="PARAMS_YAML", help="validate a params file; exit 1 with one line if bad")
    args = parser.parse_args()
    if args.check:
        try:
            load(args.check)
        except ParamError as err:
            sys.exit(f"error: {err}")
        print(f"{args.check}: ok")
    else:
        sys.stdout.write(default_yaml() if args.yaml else markdown_table())


if __name__ == "__main__":
    main()
