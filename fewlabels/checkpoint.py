"""The train stage's torch files: the trained model (models/<model>.pt) and the state that resumes a run.

Both are written through a buffer, so the same content gives the same bytes (torch.save to a path names the
archive after the file, here a per-process temporary), and read with weights_only=True, so a file that is
not ours is one clear error and can never run code.
"""
import hashlib
import io
import json
import pickle
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from fewlabels.atomic import write_bytes
from fewlabels.errors import DataError

ROOT = Path(__file__).resolve().parent.parent  # the checkout: fewlabels/ and stages/ live here
MODEL_KEYS = {"model", "channels", "size", "classes", "state_dict", "mean", "std", "best_epoch", "history"}


def save(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def load(path: Path, what: str, fix: str, keys=frozenset(), map_location=None) -> dict:
    """A dict saved by save(); DataError naming `what` the file should be and the `fix` if it is not."""
    if not Path(path).is_file():
        raise DataError(f"{path} is missing: {fix}")
    if not zipfile.is_zipfile(path):  # save() always writes torch's zip format; anything else is not ours
        raise DataError(f"{path} is not {what} (not a torch zip archive); {fix}")
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


def load_model(path: Path, model: str) -> dict:
    return load(path, "a checkpoint written by the train stage", f"rerun `dvc repro -f train@{model}`", MODEL_KEYS)


def project_sources() -> list[tuple[str, str]]:
    """(path, sha256) of every module of this checkout that the running process has imported: the code a
    run depends on (tests/test_deps.py checks that dvc.yaml lists the same files)."""
    out = []
    for module in list(sys.modules.values()):
        file = Path(getattr(module, "__file__", None) or "/").resolve()
        if file.suffix == ".py" and file.parent in (ROOT / "fewlabels", ROOT / "stages"):
            out.append((str(file.relative_to(ROOT)), hashlib.sha256(file.read_bytes()).hexdigest()))
    return sorted(out)


def run_key(**parts) -> str:
    """A short digest of everything a training run depends on: settings, data digests, code, device."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


class ResumeStore:
    """One run's resume state: <directory>/<key>.pt, rewritten after every epoch and removed on success.

    The key digests the run's params, inputs, code and device, so a changed experiment never resumes from
    another one's state. The directory is not a DVC output (DVC deletes a stage's outputs before it reruns
    it) and is git-ignored.
    """

    def __init__(self, directory: Path, key: str):
        self.directory, self.path, self.saved_epoch = directory, directory / f"{key}.pt", None

    def load(self, device) -> dict | None:
        if not self.path.exists():
            return None
        return load(self.path, "a resume state written by the train stage",
                    f"delete it to start the run over: rm -r {self.directory}", {"counters"}, map_location=device)

    def save(self, state: dict) -> None:
        save(self.path, state)
        self.saved_epoch = state["counters"]["epoch"]

    def clear(self) -> None:
        """After a successful run: this model's states, and those of runs of it that never finished."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
