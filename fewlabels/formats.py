"""Parse the raw dataset formats: idx files (MNIST, Fashion-MNIST) and CIFAR-10 python batches.

Parsers read local files only and never fetch. CIFAR-10's batches are pickles: they are read
with a restricted unpickler that only allows the few globals those batches contain, so a
crafted pickle cannot run code.
"""
import gzip
import io
import math
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from fewlabels.errors import DataError

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


class FormatError(DataError):
    """A raw file that is not what its format says it is."""


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as err:  # zlib.error: damaged deflate data
        raise FormatError(f"{path}: corrupt or truncated gzip stream ({err}); delete it and rerun download") from err


def parse_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an idx file (optionally gzipped) of unsigned bytes into an array of its dimensions."""
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise FormatError(f"{path}: {len(data)} bytes is too short for an idx header")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise FormatError(f"{path}: idx magic number {magic}, expected {expected_magic}; is this the right file?")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FormatError(f"{path}: truncated idx header ({len(data)} bytes, need {header})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)  # exact: np.prod would wrap around int64 on crafted dims
    if len(data) != expected:
        raise FormatError(f"{path}: idx dims {dims} need {expected} bytes, file has {len(data)} (truncated or padded)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_dataset(raw_dir: Path, files: dict[str, str]) -> dict[str, np.ndarray]:
    """Images [N, 1, H, W] uint8 and labels [N] int64 for train and test."""
    out = {}
    for split in ("train", "test"):
        images = parse_idx(raw_dir / files[f"{split}_images"], IDX_IMAGES_MAGIC)
        labels = parse_idx(raw_dir / files[f"{split}_labels"], IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise FormatError(f"{raw_dir}: {split} has {len(images)} images but {len(labels)} labels")
        out[f"x_{split}"] = images[:, None, :, :]
        out[f"y_{split}"] = labels.astype(np.int64)
    return out


# CIFAR-10 ------------------------------------------------------------------------------------

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = ["test_batch"]
# The only globals a CIFAR-10 batch pickle references: numpy's array reconstruction.
# numpy 2 moved numpy.core to numpy._core; pickles written by either name it differently.
CIFAR_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in CIFAR_ALLOWED_GLOBALS and refuses all others."""

    def find_class(self, module, name):
        if (module, name) not in CIFAR_ALLOWED_GLOBALS:
            raise FormatError(
                f"refusing to unpickle global {module}.{name}: CIFAR-10 batches only hold numpy arrays, "
                "lists and bytes, so this file is not a genuine batch (possibly malicious)"
            )
        return super().find_class(module, name)


def safe_unpickle(data: bytes, name: str):
    """The notebooks' `unpickle`, done safely: CIFAR batches are Python 2 pickles with byte keys."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except FormatError as err:
        raise FormatError(f"{name}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise FormatError(f"{name}: not a valid pickle ({err})") from err


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    parts = Path(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        raise FormatError(f"{archive}: refusing unsafe member path {member.name!r} (absolute or '..')")
    if not (member.isfile() or member.isdir()):
        raise FormatError(f"{archive}: refusing member {member.name!r}: links and special files are not allowed")


def read_tar_members(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read the regular files named in `wanted` from a tar.gz into memory, after checking every member.

    Nothing is extracted to disk, so no member can be written outside the destination.
    """
    out = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                _check_member(member, archive)
                if member.isfile() and member.name in wanted:
                    with tar.extractfile(member) as f:
                        out[member.name] = f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:  # zlib.error: damaged inside a member
        raise FormatError(f"{archive}: corrupt or truncated tar.gz ({err}); delete it and rerun download") from err
    missing = sorted(wanted - set(out))
    if missing:
        raise FormatError(f"{archive}: missing members {missing}")
    return out


def _cifar_batch(batch, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise FormatError(f"{name}: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise FormatError(f"{name}: b'data' must be a uint8 array [N, 3072]")
    if labels.shape != (len(data),) or labels.size and (labels.min() < 0 or labels.max() > 9):
        raise FormatError(f"{name}: b'labels' must be {len(data)} integers in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar_dataset(raw_dir: Path, files: dict[str, str]) -> dict[str, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels [N] int64 for train and test."""
    archive = raw_dir / files["archive"]
    names = {f"{CIFAR_DIR}/{b}" for b in CIFAR_TRAIN + CIFAR_TEST}
    members = read_tar_members(archive, names)
    out = {}
    for split, batches in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
        parts = [_cifar_batch(safe_unpickle(members[f"{CIFAR_DIR}/{b}"], b), b) for b in batches]
        out[f"x_{split}"] = np.concatenate([p[0] for p in parts])
        out[f"y_{split}"] = np.concatenate([p[1] for p in parts])
    return out


LOADERS = {"idx": load_idx_dataset, "cifar": load_cifar_dataset}
