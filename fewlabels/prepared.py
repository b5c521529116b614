"""The unpack stage's output, data/prepared/<dataset>/: one .npy file per array and classes.json.

Plain .npy files and sorted JSON hold nothing but the data, so the same arrays give the same bytes (and
the same md5 in dvc.lock) on every host; a .npz would add zip headers that vary with the Python release.
"""
import json
from pathlib import Path

import numpy as np

from fewlabels.atomic import NpyWriter, atomic_path
from fewlabels.errors import DataError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")  # uint8 images [N, C, H, W]; int64 labels [N]
CLASSES = "classes.json"


def save(out: Path, arrays: dict[str, np.ndarray], classes: tuple[str, ...]) -> None:
    """Write every array and the class names into the directory `out`, all or nothing."""
    with atomic_path(out, directory=True) as tmp:
        for name in ARRAYS:
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(NpyWriter(f), arrays[name], allow_pickle=False)
        with open(tmp / CLASSES, "w") as f:
            json.dump(list(classes), f)
            f.write("\n")


def load(prepared: Path, *names: str) -> dict:
    """The named arrays (and 'classes', a list of names) from a prepared directory."""
    out = {}
    for name in names:
        path = prepared / (CLASSES if name == "classes" else f"{name}.npy")
        if not path.is_file():
            raise DataError(f"{path} is missing: run `dvc repro unpack` to rebuild {prepared}")
        if name == "classes":
            with open(path) as f:
                out[name] = json.load(f)
        else:
            out[name] = np.load(path, allow_pickle=False)
    return out
