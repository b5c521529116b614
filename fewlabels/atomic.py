"""Write outputs so that a crash or Ctrl-C never leaves a half-written file behind.

Everything is written to a temporary sibling first and renamed into place only when complete
(a rename within one directory is atomic on POSIX). A process killed outright (kill -9, out of memory, power
loss) cannot delete its temporary sibling; the next write of the same path does.
"""
import errno
import glob
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fewlabels.errors import UserError

FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file size limit exceeded"}  # a write failed for want of room: the user can fix that


def _dead(pid: int) -> bool:
    """Whether process `pid` no longer runs. This process counts as dead: it has no sibling yet, so one with
    its pid was left by a killed run that had the same pid."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it only checks that the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, run by another user
        return False
    return False


def remove_stale(path: Path) -> None:
    """Delete the temporary siblings of `path` that killed runs left. A running process's sibling is its
    write in progress and is kept."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if not (pid.isdigit() and int(pid) > 0 and _dead(int(pid))):  # pid 0 would be os.kill's process group
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()


@contextmanager
def atomic_path(path: str | Path, directory: bool = False):
    """Yield a temporary path next to `path`; on success rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"  # hidden sibling, unique per process
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as err:  # KeyboardInterrupt too: remove the partial output, then re-raise
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in FULL:
            raise UserError(f"{FULL[err.errno]} while writing {path}: nothing of it was kept; free some space "
                            "and rerun") from None
        raise


class NpyWriter:
    """A file for np.save to write through write() in 16 MiB chunks: for a real file numpy calls tofile,
    which reports a full disk as "N requested and M written", without the errno that says why."""

    def __init__(self, f):
        self.write = f.write


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(NpyWriter(f), array)
