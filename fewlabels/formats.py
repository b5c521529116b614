"""Parse the raw dataset formats: idx files (MNIST, Fashion-MNIST) and CIFAR-10 python batches.

Parsers read local files only and never fetch. Every size is checked against the dataset spec
(fewlabels.datasets) before anything of that size is read or built, so a crafted file costs no more memory
than the genuine dataset: an idx header before its data, a tar member's size before its contents, a pickle's
opcodes before it is loaded and an array's shape before numpy allocates it. CIFAR-10's batches are pickles:
they are read with a restricted unpickler that only allows the few globals those batches contain, so a
crafted pickle cannot run code.
"""
import gzip
import io
import math
import pickle
import pickletools
import tarfile
import zlib
from pathlib import Path

import numpy as np

from fewlabels.datasets import DatasetSpec
from fewlabels.errors import DataError

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


class FormatError(DataError):
    """A raw file that is not what its format says it is."""


def _require(path: Path) -> None:
    if not path.is_file():
        raise FormatError(f"{path} is missing: run `dvc repro download` to fetch it")


def _read_idx(f, path: Path, expected_magic: int, item_shape: tuple[int, ...], max_items: int) -> np.ndarray:
    head = f.read(4)
    if len(head) < 4:
        raise FormatError(f"{path}: {len(head)} bytes is too short for an idx header")
    magic = int.from_bytes(head, "big")
    if magic != expected_magic:
        raise FormatError(f"{path}: idx magic number {magic}, expected {expected_magic}; is this the right file?")
    ndim = magic & 0xFF
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise FormatError(f"{path}: truncated idx header ({4 + len(raw_dims)} bytes, need {4 + 4 * ndim})")
    dims = [int.from_bytes(raw_dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4)]
    if tuple(dims[1:]) != item_shape:
        raise FormatError(f"{path}: idx dims {dims}: items of shape {dims[1:]}, this dataset's are "
                          f"{list(item_shape)}; is this the right file?")
    if dims[0] > max_items:
        raise FormatError(f"{path}: idx dims {dims}: {dims[0]} items, the genuine file has at most {max_items}")
    size = math.prod(dims)  # at most max_items images: the genuine file's size
    data = f.read(size)
    if len(data) < size:
        raise FormatError(f"{path}: truncated: idx dims {dims} need {size} bytes of data, the file has {len(data)}")
    if f.read(1):
        raise FormatError(f"{path}: padded: more data after the {size} bytes idx dims {dims} declare")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def parse_idx(path: Path, expected_magic: int, item_shape: tuple[int, ...], max_items: int) -> np.ndarray:
    """Parse an idx file (optionally gzipped) of unsigned bytes: at most `max_items` items of `item_shape`.

    The header is read and checked first, then exactly the bytes it declares; trailing data is an error.
    """
    _require(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with (gzip.GzipFile(fileobj=raw) if gzipped else raw) as f:
                return _read_idx(f, path, expected_magic, item_shape, max_items)
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as err:  # zlib.error: damaged deflate data
        raise FormatError(f"{path}: corrupt or truncated gzip stream ({err}); delete it and rerun download") from err


def load_idx_dataset(raw_dir: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Images [N, 1, H, W] uint8 and labels [N] int64 for train and test."""
    out = {}
    for split in ("train", "test"):
        n = spec.max_images[split]
        images = parse_idx(raw_dir / spec.files[f"{split}_images"].name, IDX_IMAGES_MAGIC, spec.image_shape[1:], n)
        labels_path = raw_dir / spec.files[f"{split}_labels"].name
        labels = parse_idx(labels_path, IDX_LABELS_MAGIC, (), n)
        if len(images) != len(labels):
            raise FormatError(f"{raw_dir}: {split} has {len(images)} images but {len(labels)} labels")
        if labels.size and labels.max() >= len(spec.classes):
            raise FormatError(f"{labels_path}: label {labels.max()} out of range: "
                              f"the dataset has {len(spec.classes)} classes, 0..{len(spec.classes) - 1}")
        out[f"x_{split}"] = images[:, None, :, :]
        out[f"y_{split}"] = labels.astype(np.int64)
    return out


# CIFAR-10 ------------------------------------------------------------------------------------

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
MAX_TAR_MEMBERS = 64  # the real archive holds 9: its directory, 6 batches, batches.meta and readme.html
MAX_TAR_HEADER_BYTES = 64 << 10  # a pax or GNU long-name header, which tarfile reads whole: a few hundred bytes
# A batch pickle's opcodes: about 4 per image (a label, a file name and its memo entry) and a few dozen for
# the dict and the array. Capping them caps what unpickling builds, as one opcode byte can build ~100 bytes.
PICKLE_OPS_PER_IMAGE = 8
PICKLE_OPS_EXTRA = 1024
MEMO_OPS = {"BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET"}  # the unpickler allocates its memo up to the index
# The opcodes a batch is made of: Python 2's cPickle at protocol 2, and the bytes, unicode and frame forms of
# a copy re-pickled by Python 3. Refused: sets and bytearrays (allocated by declared size or ~200 bytes per
# opcode byte), object construction other than REDUCE, persistent ids, extension codes, text-encoded numbers.
PICKLE_OPCODES = {
    "PROTO", "FRAME", "STOP", "MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2",
    "TUPLE3", "SETITEM", "SETITEMS", "APPEND", "APPENDS", "BININT", "BININT1", "BININT2", "LONG1", "NONE",
    "NEWTRUE", "NEWFALSE", "SHORT_BINSTRING", "BINSTRING", "SHORT_BINBYTES", "BINBYTES", "SHORT_BINUNICODE",
    "BINUNICODE", "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "MEMOIZE", *MEMO_OPS,
}


class _Uint8:
    """What numpy.dtype('u1', ...) gives in a batch: a token for uint8, the only dtype a batch holds. The
    file's dtype state is checked here and never reaches numpy, whose dtype.__setstate__ fails in C (a
    SystemError) on crafted states."""

    def __setstate__(self, state):
        # numpy's dtype state: (version, byte order, subarray, names, fields, ...); a plain number has none of these
        if not (isinstance(state, tuple) and len(state) >= 5 and state[2:5] == (None, None, None)):
            raise FormatError("a dtype state that is not a plain number's")


def _dtype(name, align=False, copy=False):
    """numpy.dtype as a batch calls it: for its uint8 pixels only."""
    if name not in (b"u1", "u1"):
        raise FormatError("an array dtype other than uint8 ('u1')")
    return _Uint8()


class _BatchArray(np.ndarray):
    """What the name numpy.ndarray resolves to in a batch: numpy's array, except that a pickle cannot call it
    (numpy.ndarray((2**42,)) would allocate any size), and its state is checked before numpy sizes it."""

    def __new__(cls, *args, **kwargs):
        raise FormatError("calls numpy.ndarray: a CIFAR batch names it only for numpy's _reconstruct")

    def __setstate__(self, state):
        # numpy's array state: (version, shape, dtype, Fortran order, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise FormatError("an array state that is not numpy's (version, shape, dtype, order, bytes)")
        _, shape, dtype, fortran, raw = state
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)
                and isinstance(dtype, _Uint8) and fortran is False
                and type(raw) is bytes and len(raw) == math.prod(shape)):
            raise FormatError("an array that is not uint8 bytes in C order, as many as its shape needs")
        super().__setstate__((1, shape, np.dtype(np.uint8), False, raw))  # as many bytes as the file holds


def _reconstruct(cls, shape, dtype_code):
    """numpy's _reconstruct as a batch calls it: an empty array that _BatchArray.__setstate__ then fills."""
    if cls is not _BatchArray or shape != (0,) or dtype_code not in (b"b", "b"):
        raise FormatError("calls numpy's _reconstruct other than to start an empty array")
    return np.ndarray.__new__(_BatchArray, (0,), np.uint8)


def _latin1(text, encoding):
    """_codecs.encode as Python 3 calls it to pickle bytes at protocol 2: (text, 'latin1') -> the bytes, one
    per character of a text the pickle already holds (so no larger than the file)."""
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise FormatError("calls _codecs.encode other than to write bytes as latin-1 text (Python 3, protocol 2)")
    return text.encode("latin-1")


# The only globals a CIFAR-10 batch pickle references: numpy's array reconstruction, each resolved to a checked
# stand-in, and in a copy re-pickled by Python 3 at protocol 2, its way of writing bytes. numpy 2 moved
# numpy.core to numpy._core; pickles written by either name it differently.
CIFAR_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _BatchArray,
    ("numpy", "dtype"): _dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in CIFAR_ALLOWED_GLOBALS and refuses all others."""

    def find_class(self, module, name):
        if (module, name) not in CIFAR_ALLOWED_GLOBALS:
            raise FormatError(
                f"refusing to unpickle global {module}.{name}: CIFAR-10 batches only hold numpy arrays, "
                "lists and bytes, so this file is not a genuine batch (possibly malicious)"
            )
        return CIFAR_ALLOWED_GLOBALS[(module, name)]


def _check_opcodes(data: bytes, max_ops: int) -> None:
    """Refuse, before anything is built, an opcode a batch never uses and more of them than a batch has."""
    for count, (op, arg, pos) in enumerate(pickletools.genops(data), 1):
        if count > max_ops:
            raise FormatError(f"more than {max_ops} pickle opcodes, more than a genuine batch has")
        if op.name not in PICKLE_OPCODES:
            raise FormatError(f"pickle opcode {op.name} at byte {pos}, which no genuine batch uses")
        if op.name in MEMO_OPS and arg >= max_ops:
            raise FormatError(f"pickle memo index {arg} at byte {pos}, beyond any genuine batch's")


def safe_unpickle(data: bytes, name: str, max_ops: int):
    """The notebooks' `unpickle`, done safely: CIFAR batches are Python 2 pickles with byte keys."""
    try:
        _check_opcodes(data, max_ops)
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except FormatError as err:
        raise FormatError(f"{name}: {err}") from None
    # AttributeError: BUILD on an object without state; TypeError: an unhashable key; IndexError: SETITEM on an array
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise FormatError(f"{name}: not a valid pickle ({err})") from err


class _CheckedTarInfo(tarfile.TarInfo):
    """A tar header whose extensions tarfile reads into memory before the member they describe (pax and GNU
    long-name headers whole, sparse maps block by block) is refused when it is larger than any real one."""

    def _proc_member(self, tar):  # tarfile's hook for processing a header by type
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise FormatError(f"refusing sparse member {self.name!r}: the genuine archive has none")
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                    tarfile.SOLARIS_XHDTYPE)
        if self.type in extended and self.size > MAX_TAR_HEADER_BYTES:
            raise FormatError(f"refusing an extended header of {self.size} bytes (at most {MAX_TAR_HEADER_BYTES})")
        return super()._proc_member(tar)


def _check_member(member: tarfile.TarInfo, max_bytes: int) -> None:
    parts = Path(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        raise FormatError(f"refusing unsafe member path {member.name!r} (absolute or '..')")
    if not (member.isfile() or member.isdir()):
        raise FormatError(f"refusing member {member.name!r}: links and special files are not allowed")
    if member.size > max_bytes:
        raise FormatError(f"refusing member {member.name!r} of {member.size} bytes: "
                          f"no file in the genuine archive is over {max_bytes}")


def read_tar_members(archive: Path, wanted: set[str], max_bytes: int):
    """Yield (name, bytes) for each regular file named in `wanted` of a tar.gz, in archive order, after
    checking every member: its path, its type and that it is at most `max_bytes` long.

    Nothing is extracted to disk, so no member can be written outside the destination; one member at a time
    is in memory.
    """
    _require(archive)
    seen = set()
    try:
        with tarfile.open(archive, "r:gz", tarinfo=_CheckedTarInfo) as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_TAR_MEMBERS:
                    raise FormatError(f"more than {MAX_TAR_MEMBERS} members, the genuine archive has 9")
                _check_member(member, max_bytes)
                if member.isfile() and member.name in wanted:
                    if member.name in seen:
                        raise FormatError(f"member {member.name!r} appears twice")
                    seen.add(member.name)
                    with tar.extractfile(member) as f:
                        yield member.name, f.read()
    except FormatError as err:
        raise FormatError(f"{archive}: {err}") from None
    # zlib.error: damaged inside a member; RecursionError: tarfile reads chained extended headers recursively
    except (tarfile.TarError, EOFError, OSError, zlib.error, RecursionError) as err:
        raise FormatError(f"{archive}: corrupt or truncated tar.gz ({err}); delete it and rerun download") from err
    missing = sorted(wanted - seen)
    if missing:
        raise FormatError(f"{archive}: missing members {missing}")


def _cifar_batch(batch, name: str, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, C, H, W] and labels [N] of one unpickled batch, once every field's type, shape and range is
    checked (a genuine batch: b'data' a uint8 array [N, 3072], b'labels' a list of N ints in 0..9)."""
    if type(batch) is not dict or b"data" not in batch or b"labels" not in batch:
        raise FormatError(f"{name}: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    pixels, n_classes = math.prod(spec.image_shape), len(spec.classes)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels:
        raise FormatError(f"{name}: b'data' must be a uint8 array [N, {pixels}]")
    # Checked item by item before numpy sees the list: nested lists would expand, bytes would not compare.
    if type(labels) is not list or len(labels) != len(data) or not all(
            type(c) is int and 0 <= c < n_classes for c in labels):
        raise FormatError(f"{name}: b'labels' must be a list of {len(data)} integers in 0..{n_classes - 1}")
    return data.view(np.ndarray).reshape(-1, *spec.image_shape), np.array(labels, dtype=np.int64)


def load_cifar_dataset(raw_dir: Path, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels [N] int64 for train and test."""
    archive = raw_dir / spec.files["archive"].name
    wanted = {f"{CIFAR_DIR}/{b}" for batches in CIFAR_BATCHES.values() for b in batches}
    max_images = spec.max_member_bytes // math.prod(spec.image_shape)  # in one batch, so in one pickle
    max_ops = PICKLE_OPS_PER_IMAGE * max_images + PICKLE_OPS_EXTRA
    parsed = {}
    for member, data in read_tar_members(archive, wanted, spec.max_member_bytes):
        batch = member.removeprefix(f"{CIFAR_DIR}/")
        parsed[batch] = _cifar_batch(safe_unpickle(data, batch, max_ops), batch, spec)
        del data  # before the next member is read: one member's bytes in memory at a time
    out = {}
    for split, batches in CIFAR_BATCHES.items():
        parts = [parsed.pop(b) for b in batches]  # dropped once concatenated
        n = sum(len(images) for images, _ in parts)
        if n > spec.max_images[split]:
            raise FormatError(f"{archive}: {split} batches hold {n} images, the genuine ones {spec.max_images[split]}")
        out[f"x_{split}"] = np.concatenate([images for images, _ in parts])
        out[f"y_{split}"] = np.concatenate([labels for _, labels in parts])
    return out


LOADERS = {"idx": load_idx_dataset, "cifar": load_cifar_dataset}
