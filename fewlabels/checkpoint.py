"""The train stage's torch files: the trained model (models/<model>.pt) and the state that resumes a run.

Both are written through a buffer, so the same content gives the same bytes (torch.save to a path names the
archive after the file, here a per-process temporary), and read with weights_only=True, so a file that is
not ours is one clear error and can never run code. Before torch reads a file, its size is bounded by what
the model it should hold needs (`max_bytes`), and afterwards its content is compared with what our code
would have written (`check_like`): the same keys and types, tensors of the same names, shapes and dtypes.
"""
import hashlib
import io
import math
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from fewlabels.atomic import write_bytes
from fewlabels.errors import DataError

ROOT = Path(__file__).resolve().parent.parent  # the checkout: fewlabels/ and stages/ live here
MODEL_KEYS = {"model", "channels", "size", "classes", "state_dict", "mean", "std", "best_epoch", "epochs_run",
              "history"}
HISTORY_ROW = {"epoch": int, "train_loss": float, "train_acc": float, "valid_loss": float, "valid_acc": float,
               "lr": float}  # a model file's history row (the train stage's HISTORY)


class Mismatch(ValueError):
    """What a file read back holds differs from what our code writes; the message names the first difference."""


def nbytes(tensors: dict) -> int:
    """Bytes of a state_dict's tensors."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def _check_archive(path: Path, max_bytes: int) -> str | None:
    """Why torch must not read the zip at `path`, or None. torch.save stores every member uncompressed, so a
    compressed one is not ours (1 MB could unpack to gigabytes); the members' declared sizes, overlapping
    or not, must add up to at most `max_bytes`."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as err:
        return f"not a torch zip archive: {err}"
    if any(m.compress_type != zipfile.ZIP_STORED for m in members):
        return "it holds a compressed member, which torch.save never writes"
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        return f"{total:,} bytes, more than the {max_bytes:,} this model's file can need"
    return None


def load(path: Path, what: str, fix: str, keys=frozenset(), map_location=None, *, max_bytes: int) -> dict:
    """A dict saved by save(), of at most `max_bytes`; DataError naming `what` the file should be and the
    `fix` if it is not."""
    if not Path(path).is_file():
        raise DataError(f"{path} is missing: {fix}")
    size = Path(path).stat().st_size  # before zipfile reads its directory: a million members cost a gigabyte
    if size > max_bytes:
        raise DataError(f"{path} is not {what} ({size:,} bytes, more than the {max_bytes:,} it can need); {fix}")
    if not zipfile.is_zipfile(path):  # save() always writes torch's zip format; anything else is not ours
        raise DataError(f"{path} is not {what} (not a torch zip archive); {fix}")
    refused = _check_archive(path, max_bytes)
    if refused:
        raise DataError(f"{path} is not {what} ({refused}); {fix}")
    try:
        with warnings.catch_warnings():  # torch warns about what a foreign file holds; our error says it once
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's message would suggest weights_only=False: never for such a file
        raise DataError(f"{path} is not {what} (it holds more than tensors and plain data); {fix}") from None
    except Exception as err:  # noqa: BLE001  a damaged archive can fail anywhere in torch's reader; none of our code runs in it
        raise DataError(f"{path} is not {what} (truncated or corrupt: {type(err).__name__}: "
                        f"{str(err).strip()[:80]}); {fix}") from None
    if not isinstance(obj, dict) or not keys <= obj.keys():
        raise DataError(f"{path} is not {what} (unexpected content); {fix}")
    return obj


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a {obj.dtype} tensor of shape {list(obj.shape)}"
    return type(obj).__name__


def check_keys(obj, keys, where: str) -> None:
    """Mismatch unless `obj` is a dict with exactly `keys`."""
    if not isinstance(obj, dict):
        raise Mismatch(f"{where} is {_describe(obj)}, not a mapping")
    extra, missing = sorted(map(str, obj.keys() - keys)), sorted(map(str, keys - obj.keys()))
    if extra or missing:
        raise Mismatch(f"{where}: " + (f"unexpected key {extra[0][:40]!r}" if extra else f"missing key {missing[0]!r}"))


def check_like(obj, template, where: str) -> None:
    """Mismatch unless `obj` (read from a file) has the structure of `template` (what our code writes): the
    same dict keys, list lengths and scalar types, and tensors of the same shape and dtype."""
    if isinstance(template, torch.Tensor):
        if not (isinstance(obj, torch.Tensor) and obj.shape == template.shape and obj.dtype == template.dtype):
            raise Mismatch(f"{where} is {_describe(obj)}, not {_describe(template)}")
    elif isinstance(template, dict):
        check_keys(obj, template.keys(), where)
        for key, value in template.items():
            check_like(obj[key], value, f"{where}.{key}")
    elif isinstance(template, (list, tuple)):
        if type(obj) is not type(template) or len(obj) != len(template):
            raise Mismatch(f"{where} is {_describe(obj)}{f' of {len(obj)}' if isinstance(obj, (list, tuple)) else ''}"
                           f", not {type(template).__name__} of {len(template)}")
        for i, (item, expected) in enumerate(zip(obj, template)):
            check_like(item, expected, f"{where}[{i}]")
    elif type(obj) is not type(template):
        raise Mismatch(f"{where} is {_describe(obj)}, not {_describe(template)}")


def check_history(history, row: dict, epochs: int, where: str) -> None:
    """At most `epochs` rows, each with `row`'s keys and types ({key: type})."""
    if not isinstance(history, list) or len(history) > epochs:
        raise Mismatch(f"{where} is {_describe(history)}"
                       f"{f' of {len(history):,} rows' if isinstance(history, list) else ''}, not at most {epochs} rows")
    for i, got in enumerate(history):
        check_like(got, {key: kind() for key, kind in row.items()}, f"{where}[{i}]")


MAX_WEIGHT = 1e6  # no trained weight or batch-norm statistic comes near this; a file's beyond it is not a result


def check_values(state: dict, where: str) -> None:
    """Mismatch unless every floating tensor of a state_dict is finite and within +-MAX_WEIGHT, and every
    batch-norm running variance is at least 0: what training can leave, so metrics never come from NaN
    weights or a variance below zero."""
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        if not bool(torch.isfinite(tensor).all()) or tensor.numel() and float(tensor.abs().max()) > MAX_WEIGHT:
            raise Mismatch(f"{where}.{name} holds values that are not finite or beyond {MAX_WEIGHT:g}")
        if name.endswith("running_var") and tensor.numel() and float(tensor.min()) < 0:
            raise Mismatch(f"{where}.{name} holds a negative variance")


def model_bytes(state: dict) -> int:
    """The most bytes a genuine model file takes: its weights (`state`, a freshly built model's state_dict)
    with room to spare for the history and the archive's headers."""
    return 2 * nbytes(state) + (4 << 20)


def resume_bytes(state: dict, n_images: int, epochs: int) -> int:
    """The most bytes a genuine resume file takes: the model ~4 times (weights, average, best, optimizer),
    per training image statistics (FlexMatch's), a history row per epoch and the archive's headers."""
    return 8 * nbytes(state) + 64 * n_images + 512 * epochs + (4 << 20)


def load_model(path: Path, model: str, expected: dict, state: dict) -> dict:
    """The train stage's model file for `model`, checked against what the train stage would write for it:
    `expected` holds the data's channels, size and classes, `state` is the freshly built model's state_dict."""
    fix = f"rerun `dvc repro -f train@{model}`"
    record = load(path, "a checkpoint written by the train stage", fix, max_bytes=model_bytes(state))
    try:
        check_keys(record, MODEL_KEYS, "it")
        # types and lengths first, so a message never turns a crafted structure into text (a list that holds
        # itself 40 levels deep prints as 2**40 items)
        check_like(record["model"], model, "model")
        if record["model"] != model:
            raise Mismatch(f"it holds model {record['model'][:40]!r}, not {model!r}")
        for key, value in expected.items():
            if type(record[key]) is not type(value) or (isinstance(value, list) and len(record[key]) != len(value)):
                raise Mismatch(f"its {key} is {_describe(record[key])}"
                               f"{f' of {len(record[key]):,}' if isinstance(record[key], list) else ''}, unlike the "
                               f"data's {str(value)[:60]}")
            check_like(record[key], value, key)
            if record[key] != value:
                raise Mismatch(f"its {key} {str(record[key])[:60]} differ from the data's {str(value)[:60]}")
        check_like(record["state_dict"], state, "state_dict")
        check_values(record["state_dict"], "state_dict")
        for key in ("mean", "std"):
            values = record[key]
            check_like(values, [0.0] * expected["channels"], key)
            if not all(math.isfinite(v) and (key == "mean" or v > 0) for v in values):
                raise Mismatch(f"{key} {values} are not finite{' positive' if key == 'std' else ''} numbers")
        check_history(record["history"], HISTORY_ROW, record["epochs_run"] if type(record["epochs_run"]) is int else 0,
                      "history")
        if type(record["best_epoch"]) is not int or not 1 <= record["best_epoch"] <= len(record["history"]):
            raise Mismatch(f"best_epoch {str(record['best_epoch'])[:20]} is not one of its {len(record['history'])} epochs")
    except Mismatch as err:
        raise DataError(f"{path} is not a checkpoint of this model and data ({err}); {fix}") from None
    return record


def project_sources() -> list[tuple[str, str]]:
    """(path, sha256) of every module of this checkout's fewlabels/ and stages/: the code a run may execute,
    including the modules it imports later by name (fewlabels.methods)."""
    files = sorted(f for package in ("fewlabels", "stages") for f in (ROOT / package).rglob("*.py"))
    return [(str(f.relative_to(ROOT)), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files]


def array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


class ResumeStore:
    """One run's resume state: <directory>/<key>.pt, rewritten after every epoch and removed on success.

    The key (fewlabels.resume) digests the run's params, inputs, code and device, so a changed experiment
    never resumes from another one's state. The directory is not a DVC output (DVC deletes a stage's
    outputs before it reruns it) and is git-ignored.
    """

    def __init__(self, directory: Path, key: str):
        self.directory, self.path, self.saved_epoch = directory, directory / f"{key}.pt", None
        for folder in (directory, *directory.parents[:-1]):  # .resume/<model>, .resume (relative to the checkout)
            if folder.is_symlink():
                raise DataError(f"{folder} is a symbolic link: a finished run deletes {directory}, which must not "
                                f"reach outside the checkout; make {folder} a plain folder")

    @property
    def fix(self) -> str:
        return f"delete it to start the run over: rm -r {self.directory}"

    def load(self, device, max_bytes: int) -> dict | None:
        if not self.path.exists():
            return None
        return load(self.path, "a resume state written by the train stage", self.fix, {"counters"},
                    map_location=device, max_bytes=max_bytes)

    def refuse(self, err: Mismatch) -> DataError:
        """The error for a resume state that differs from what this run writes."""
        return DataError(f"{self.path} is not a resume state of this run ({err}); {self.fix}")

    def save(self, state: dict) -> None:
        save(self.path, state)
        self.saved_epoch = state["counters"]["epoch"]

    def clear(self) -> None:
        """After a successful run: this model's states, and those of runs of it that never finished."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
