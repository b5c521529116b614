"""Tiny fake datasets in the exact on-disk formats of the real ones, plus a local HTTP mirror.

In the style of torchvision's test fakes: a few images each, fixed RNG, written byte for byte
the way the originals are (big-endian idx headers in gzip; Python 2 pickles in a tar.gz), so
the parsers under test cannot tell them from the real thing except by size. Also hostile ones:
gzip and tar bombs (small on disk, gigabytes when read) and mirrors that send far more than a file holds.
"""
import builtins
import gzip
import hashlib
import io
import os
import pickle
import queue
import random
import socket
import struct
import tarfile
import threading
import time
from contextlib import contextmanager
from functools import cache, partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from fewlabels.datasets import DATASETS

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
IDX_FILES = {  # role -> name, as in fewlabels.datasets (kept literal so a rename there is caught)
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                 b"dog", b"frog", b"horse", b"ship", b"truck"]


# idx (MNIST, Fashion-MNIST) ------------------------------------------------------------------

def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The uncompressed idx encoding: big-endian magic, one big-endian uint32 per dim, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_gz(path: Path, array: np.ndarray, magic: int) -> Path:
    path = Path(path)
    path.write_bytes(gzip.compress(idx_bytes(array, magic), mtime=0))  # mtime=0: same bytes every run
    return path


def _balanced_labels(rng, n: int, n_classes: int) -> np.ndarray:
    """Every class present (n >= n_classes), in shuffled order, as uint8 like the real files."""
    return rng.permutation(np.arange(n) % n_classes).astype(np.uint8)


def make_idx_dataset(directory: Path, n_train: int = 60, n_test: int = 20, size: int = 28,
                     n_classes: int = 10) -> dict[str, np.ndarray]:
    """Write the four gzipped idx files into `directory`; return what they hold (uint8 arrays)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"y_{split}"] = _balanced_labels(rng, n, n_classes)
        write_idx_gz(directory / IDX_FILES[f"{split}_images"], arrays[f"x_{split}"], IMAGES_MAGIC)
        write_idx_gz(directory / IDX_FILES[f"{split}_labels"], arrays[f"y_{split}"], LABELS_MAGIC)
    return arrays


# CIFAR-10 (Python 2 pickles in a tar.gz) --------------------------------------------------------

class Py2Pickler(pickle._Pickler):
    """Pickle the way Python 2's cPickle did for CIFAR-10 (protocol 2).

    Python 3 writes bytes at protocol 2 as `_codecs.encode(str, 'latin1')` calls; Python 2 had
    only byte strings and wrote them as SHORT_BINSTRING/BINSTRING. Both str and bytes are
    written that way here (in Python 2 numpy's own names such as 'u1' were byte strings too),
    and numpy's array reconstructor is named `numpy.core.multiarray` as in the real files.
    """
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, reconstruct_module: str = "numpy.core.multiarray"):
        super().__init__(file, protocol=2)
        self.reconstruct_module = reconstruct_module

    def save_py2_string(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<I", len(raw)) + raw)
        self.memoize(raw)  # keeps `raw` alive, so its id is not reused for another object

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", None) == "numpy._core.multiarray":  # numpy 2's name for it
            self.write(pickle.GLOBAL + f"{self.reconstruct_module}\n{name or obj.__name__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj, reconstruct_module: str = "numpy.core.multiarray") -> bytes:
    f = io.BytesIO()
    Py2Pickler(f, reconstruct_module).dump(obj)
    return f.getvalue()


def cifar_batch(rng, n: int, label: bytes) -> dict:
    """A batch dict shaped like the real ones: byte keys, list labels, uint8 [N, 3072] data."""
    labels = _balanced_labels(rng, n, 10)
    return {
        b"batch_label": label,
        b"labels": [int(c) for c in labels],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"fake_{label.decode().replace(' ', '_')}_{i}.png".encode() for i in range(n)],
    }


def _tar_info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mtime = size, kind, linkname, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
               tar_format: int = tarfile.PAX_FORMAT) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tar_format) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _cifar_members(n_per_batch: int, reconstruct_module: str, replace: dict[str, bytes]):
    """(tar members, arrays they hold): the real archive's layout, with `replace` swapping contents."""
    rng = np.random.default_rng(0)
    members = [(_tar_info(CIFAR_DIR, kind=tarfile.DIRTYPE), None)]
    batches = {f"data_batch_{i}": f"training batch {i} of 5".encode() for i in range(1, 6)}
    batches["test_batch"] = b"testing batch 1 of 1"
    arrays = {"train": [], "test": []}
    for name, label in batches.items():
        batch = cifar_batch(rng, n_per_batch, label)
        arrays["test" if name == "test_batch" else "train"].append(batch)
        members.append((name, py2_pickle(batch, reconstruct_module)))
    meta = {b"num_cases_per_batch": n_per_batch, b"label_names": CIFAR_CLASSES, b"num_vis": 3072}
    members.append(("batches.meta", py2_pickle(meta, reconstruct_module)))
    members.append(("readme.html", b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0; url=...\">\n"))
    out = [members[0]]
    for name, data in members[1:]:
        data = replace.get(f"{CIFAR_DIR}/{name}", data)
        out.append((_tar_info(f"{CIFAR_DIR}/{name}", len(data)), data))
    expected = {}
    for split, parts in arrays.items():
        expected[f"x_{split}"] = np.concatenate([b[b"data"] for b in parts]).reshape(-1, 3, 32, 32)
        expected[f"y_{split}"] = np.concatenate([b[b"labels"] for b in parts]).astype(np.int64)
    return out, expected


def make_cifar_tar(directory: Path, n_per_batch: int = 10, reconstruct_module: str = "numpy.core.multiarray",
                   replace: dict[str, bytes] | None = None) -> dict[str, np.ndarray]:
    """Write `directory`/cifar-10-python.tar.gz; return the arrays a correct loader must produce.

    `replace` maps member paths (e.g. 'cifar-10-batches-py/data_batch_1') to bytes stored instead.
    """
    members, expected = _cifar_members(n_per_batch, reconstruct_module, replace or {})
    _write_tar(Path(directory) / CIFAR_ARCHIVE, members)
    return expected


class Reduced:
    """Unpickling this calls `func(*args)`, then sets `state` if given: the classic pickle code-execution
    trick, and the way numpy pickles its arrays (so crafted arrays can be written too)."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


PAYLOADS = {  # how a crafted batch would create `marker` if it were unpickled naively
    "open": lambda marker: (builtins.open, (str(marker), "w")),
    "system": lambda marker: (os.system, (f"touch '{marker}'",)),
    "exec": lambda marker: (builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
}


def malicious_pickle_bytes(marker_file: Path, payload: str = "open") -> bytes:
    """A batch-looking dict whose b'data' is a payload that creates `marker_file` when unpickled."""
    func, args = PAYLOADS[payload](marker_file)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [0], b"data": Reduced(func, args)}
    return pickle.dumps(batch, protocol=2)


def write_malicious_pickle(path: Path, marker_file: Path, payload: str = "open") -> Path:
    path = Path(path)
    path.write_bytes(malicious_pickle_bytes(marker_file, payload))
    return path


def make_malicious_cifar_tar(directory: Path, marker_file: Path, payload: str = "open") -> Path:
    """A CIFAR archive that is genuine except that data_batch_1 is a malicious pickle."""
    make_cifar_tar(directory, replace={f"{CIFAR_DIR}/data_batch_1": malicious_pickle_bytes(marker_file, payload)})
    return Path(directory) / CIFAR_ARCHIVE


def make_tar_with_member(path: Path, name: str, kind: str = "file", linkname: str = "/etc/passwd") -> Path:
    """A genuine fake CIFAR archive plus (last, so every member must be checked) one extra member.

    kind: 'file' (e.g. name '../evil' or '/tmp/evil'), 'symlink' or 'hardlink' (to `linkname`).
    """
    members, _ = _cifar_members(2, "numpy.core.multiarray", {})
    members = [m for m in members if m[0].name != name]  # a link may stand in for a real member
    types = {"file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
    data = b"evil\n" if kind == "file" else None
    members.append((_tar_info(name, len(data or b""), types[kind], linkname if kind != "file" else ""), data))
    return _write_tar(path, members)


# hostile files: small on disk, gigabytes when read whole ------------------------------------------

BOMB_BLOCK_BYTES = 16 << 20  # NUL bytes per repeated gzip member of a bomb: 16 KiB compressed


@cache
def _zeros_member() -> bytes:
    return gzip.compress(bytes(BOMB_BLOCK_BYTES), mtime=0)


def gzip_bomb(prefix: bytes, zeros: int) -> bytes:
    """A valid gzip file that decompresses to `prefix` then `zeros` NUL bytes.

    A gzip file may hold several members, read one after the other; the zeros are one member compressed
    once and repeated, so a 2 GB bomb is 2 MB and builds in well under a second.
    """
    full, rest = divmod(zeros, BOMB_BLOCK_BYTES)
    return gzip.compress(prefix, mtime=0) + _zeros_member() * full + gzip.compress(bytes(rest), mtime=0)


def idx_header(magic: int, *dims: int) -> bytes:
    """An idx header alone: what `idx_bytes` writes before the data."""
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims)


def cifar_tar_bomb(path: Path, member: str, size: int) -> Path:
    """A tar.gz of the real archive's directory and one `member` of `size` NUL bytes, as a gzip bomb."""
    headers = b"".join(_tar_info(name, n, kind).tobuf() for name, n, kind in [
        (CIFAR_DIR, 0, tarfile.DIRTYPE), (f"{CIFAR_DIR}/{member}", size, tarfile.REGTYPE)])
    padded = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    path = Path(path)
    path.write_bytes(gzip_bomb(headers, padded + 2 * tarfile.BLOCKSIZE))  # two zero blocks end a tar
    return path


# digests and mirrors ----------------------------------------------------------------------------

def digest_of(path: Path) -> str:
    """The digest fewlabels/datasets.py would hold for `path` (md5 for the CIFAR archive, gunzip-sha256 for idx)."""
    data = Path(path).read_bytes()
    if path.name.endswith(".tar.gz"):
        return "md5:" + hashlib.md5(data).hexdigest()
    if path.name.endswith(".gz"):
        return "gunzip-sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    raise ValueError(f"no digest convention for {path.name}")


def digests_for(directory: Path) -> dict[str, str]:
    """name -> digest for every dataset file in `directory`: md5 for the CIFAR archive, gunzip-sha256 for idx."""
    return {p.name: digest_of(p) for p in sorted(Path(directory).iterdir()) if p.name.endswith(".gz")}


def pin_digests(code: Path, dataset: str, mirror: Path) -> None:
    """Make the copy of the project's code in `code` (dvcrepo.copy_pipeline) accept the fake files in `mirror` as
    `dataset`: its fewlabels/datasets.py gets their digests in place of the genuine ones. Digests are code, not
    params, so this is the edit a dataset of other bytes takes; the stages run from `code` import the copy."""
    digests = digests_for(mirror)
    path = Path(code) / "fewlabels" / "datasets.py"
    text = path.read_text()
    for file in DATASETS[dataset].files.values():
        assert text.count(file.digest) == 1, f"{path} should spell the digest of {dataset}'s {file.name} once"
        text = text.replace(file.digest, digests[file.name])
    path.write_text(text)


def unassigned_port() -> int:
    """A local port nothing listens on, below the kernel's range for ports it hands out itself (so no other
    test's client or server socket can take it between this check and its use), drawn at random."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        first = int(f.read().split()[0])
    for port in random.Random().sample(range(max(1024, first - 8000), first), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def read_line(stream, timeout: float) -> str:
    """The next line of a subprocess's text `stream`, waiting at most `timeout` seconds for it."""
    box = queue.Queue()
    threading.Thread(target=lambda: box.put(stream.readline()), daemon=True).start()
    return box.get(timeout=timeout)


def free_port() -> int:
    """A local port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _background(server):
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # quick shutdown
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serve(directory: Path, hits: list | None = None, fail_first: int = 0):
    """Serve `directory` over HTTP on 127.0.0.1 (free port) in a background thread; yield the base URL.

    Each request path is appended to `hits` if given; the first `fail_first` requests get a 503.
    """
    hits = [] if hits is None else hits

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            hits.append(self.path)
            if len(hits) <= fail_first:
                self.send_error(503, "try again")
            else:
                super().do_GET()

    with _background(ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(directory)))) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def serve_raw(response: bytes, delay: float = 0, received: threading.Event | None = None):
    """A broken mirror: answers every connection with `response` verbatim after `delay` s, then hangs up.
    Sets `received` once a request has arrived (the client is then waiting for the answer)."""
    from socketserver import BaseRequestHandler, ThreadingTCPServer

    class Handler(BaseRequestHandler):
        def handle(self):
            self.request.recv(65536)  # the request; its content does not matter
            if received is not None:
                received.set()
            time.sleep(delay)
            self.request.sendall(response)

    server = ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with _background(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def serve_zeros(size: int, announce: bool, sent: list):
    """A hostile mirror: answers every request with `size` NUL bytes, announcing that length in a
    Content-Length header or, like an endless stream, not. Appends to `sent` the bytes each client took in
    whole sends, before it hung up or the `size` ran out."""
    from socketserver import BaseRequestHandler, ThreadingTCPServer

    chunk = bytes(1 << 20)

    class Handler(BaseRequestHandler):
        def handle(self):
            self.request.recv(65536)  # the request; its content does not matter
            length = b"Content-Length: %d\r\n" % size if announce else b""
            self.request.sendall(b"HTTP/1.0 200 OK\r\n" + length + b"\r\n")
            total = 0
            try:
                while total < size:
                    part = chunk[:size - total]
                    self.request.sendall(part)
                    total += len(part)
            except (BrokenPipeError, ConnectionResetError):  # the client hung up, as a capped download does
                pass
            sent.append(total)

    server = ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with _background(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def serve_trickle(interval: float = 0.05):
    """A mirror that never finishes: an HTTP header without a length, then one byte every `interval` s until
    the client hangs up (each read well within any timeout)."""
    from socketserver import BaseRequestHandler, ThreadingTCPServer

    class Handler(BaseRequestHandler):
        def handle(self):
            self.request.recv(65536)
            try:
                self.request.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
                while True:
                    self.request.sendall(b"x")
                    time.sleep(interval)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up
                pass

    server = ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with _background(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"
