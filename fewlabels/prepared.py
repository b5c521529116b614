"""The unpack stage's output, data/prepared/<dataset>/: one .npy file per array and classes.json.

Plain .npy files and sorted JSON hold nothing but the data, so the same arrays give the same bytes (and
the same md5 in dvc.lock) on every host; a .npz would add zip headers that vary with the Python release.

Read back, every file is checked against what the pipeline itself writes before it is used: an .npy
header's dtype and shape before its array is read (so a tampered header cannot ask for terabytes), labels
within the classes, classes.json the dataset's own names; the split and index files (load_indices) sorted,
distinct positions within the training set. A file that is not is one line naming it and the fix.
"""
import json
from pathlib import Path

import numpy as np

from fewlabels.atomic import NpyWriter, atomic_path
from fewlabels.datasets import DatasetSpec
from fewlabels.errors import DataError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")  # uint8 images [N, C, H, W]; int64 labels [N]
CLASSES = "classes.json"
MAX_CLASSES_BYTES = 1 << 16  # classes.json of any dataset here is under 200 bytes


def save(out: Path, arrays: dict[str, np.ndarray], classes: tuple[str, ...]) -> None:
    """Write every array and the class names into the directory `out`, all or nothing."""
    with atomic_path(out, directory=True) as tmp:
        for name in ARRAYS:
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(NpyWriter(f), arrays[name], allow_pickle=False)
        with open(tmp / CLASSES, "w") as f:
            json.dump(list(classes), f)
            f.write("\n")


def _header(path: Path) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) of an .npy file, read from its header alone; ValueError if it has none."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(f)


def _read_npy(path: Path, dtype: str, shape: tuple, max_len: int, min_len: int = 1) -> np.ndarray:
    """The array in `path`, after its header said `dtype` and `shape` (None: any length from `min_len` to
    `max_len`)."""
    try:
        got_shape, fortran, got_dtype = _header(path)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"no .npy header: {str(err)[:80]}") from None
    if got_dtype != np.dtype(dtype) or fortran or len(got_shape) != len(shape) or not all(
            want is None or want == got for want, got in zip(shape, got_shape)) or not min_len <= got_shape[0] <= max_len:
        raise ValueError(f"{got_dtype.str[:20]} {list(got_shape)[:6]}, not {np.dtype(dtype)} "
                         f"[{', '.join('N' if d is None else str(d) for d in shape)}] with N <= {max_len:,}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # shorter or longer than its header says
        raise ValueError(f"unreadable: {str(err)[:80]}") from None


def _check(name: str, spec: DatasetSpec, path: Path):
    """What `name` holds, read from `path` and checked against `spec`; ValueError saying what is off."""
    if name == "classes":
        if path.stat().st_size > MAX_CLASSES_BYTES:
            raise ValueError(f"more than {MAX_CLASSES_BYTES:,} bytes")
        with open(path) as f:
            try:
                classes = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"not JSON: {str(err)[:80]}") from None
        if classes != list(spec.classes):
            raise ValueError("not the dataset's class names")
        return classes
    split = name.split("_", 1)[1]
    if name.startswith("x_"):
        return _read_npy(path, "uint8", (None, *spec.image_shape), spec.max_images[split])
    labels = _read_npy(path, "int64", (None,), spec.max_images[split])
    if labels.min() < 0 or labels.max() >= len(spec.classes):
        raise ValueError(f"labels from {labels.min()} to {labels.max()}, not within [0, {len(spec.classes)})")
    return labels


def load(prepared: Path, spec: DatasetSpec, *names: str) -> dict:
    """The named arrays (and 'classes', a list of names) from a prepared directory of dataset `spec`, each
    checked against what unpack writes for it (DataError otherwise)."""
    out = {}
    fix = f"run `dvc repro -f unpack` to rebuild {prepared}"
    for name in names:
        path = prepared / (CLASSES if name == "classes" else f"{name}.npy")
        if not path.is_file():
            raise DataError(f"{path} is missing: {fix}")
        try:
            out[name] = _check(name, spec, path)
        except ValueError as err:
            raise DataError(f"{path} is not what unpack writes ({err}); {fix}") from None
    for split in ("train", "test"):
        x, y = out.get(f"x_{split}"), out.get(f"y_{split}")
        if x is not None and y is not None and len(x) != len(y):
            raise DataError(f"{prepared}: {len(x):,} {split} images but {len(y):,} labels; {fix}")
    return out


def load_indices(path: Path, n: int, fix: str) -> np.ndarray:
    """A split or index file: sorted, distinct int64 positions into a training set of `n` images (possibly
    none: at labeled_frac 1.0 nothing is unlabeled); DataError naming `fix` otherwise."""
    if not path.is_file():
        raise DataError(f"{path} is missing: {fix}")
    try:
        index = _read_npy(path, "int64", (None,), n, min_len=0)
    except ValueError as err:
        raise DataError(f"{path} is not an index file ({err}); {fix}") from None
    if len(index) and (index[0] < 0 or index[-1] >= n or not bool(np.all(np.diff(index) > 0))):
        raise DataError(f"{path} is not an index file (not sorted distinct positions in [0, {n:,})); {fix}")
    return index
