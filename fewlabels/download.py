"""Fetch files from an ordered list of mirrors, verifying each against a digest before keeping it."""
import gzip
import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from fewlabels.errors import DataError

CHUNK = 1 << 20  # bytes per read: large enough to keep per-read overhead negligible
RETRY_DELAY_S = 1.0  # pause before retrying the same mirror


class DownloadError(DataError):
    """No mirror served a file with the expected digest."""


def file_digest(path: Path, digest: str) -> str:
    """Return `path`'s digest in the same 'algo:hex' form as `digest` ('md5:' or 'gunzip-sha256:')."""
    algo = digest.partition(":")[0]
    if algo == "md5":
        h, opener = hashlib.md5(), open
    elif algo == "gunzip-sha256":
        h, opener = hashlib.sha256(), gzip.open
    else:
        raise ValueError(f"unknown digest kind {algo!r}: use 'md5:<hex>' or 'gunzip-sha256:<hex>'")
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as err:  # not gzip, a truncated or a damaged gzip stream
        return f"{algo}:unreadable ({err})"
    return f"{algo}:{h.hexdigest()}"


def _stream(url: str, dest: Path, timeout_s: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def _failed(failures: list[str], message: str) -> None:
    """Record a failed attempt and report it now, so a bad mirror is visible even when a later one works."""
    failures.append(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def fetch(name: str, mirrors: list[str], digest: str, dest: Path, timeout_s: float = 30, retries: int = 2) -> str:
    """Download `name` from the first mirror that serves bytes matching `digest` into `dest`.

    Network errors are retried `retries` times per mirror; a digest mismatch moves on to the
    next mirror at once. Returns the URL that succeeded; raises DownloadError when all fail.
    """
    failures = []
    for base in mirrors:
        url = f"{base.rstrip('/')}/{name}"
        for attempt in range(retries + 1):
            try:
                _stream(url, dest, timeout_s)
            # HTTPError, timeouts, refused, missing file; HTTPException: not HTTP, or cut off mid-transfer
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                _failed(failures, f"{url}: {err}")
                permanent = isinstance(err, urllib.error.HTTPError) and err.code < 500  # 404: retrying won't help
                if permanent:
                    break
                if attempt < retries:
                    time.sleep(RETRY_DELAY_S)
                continue
            actual = file_digest(dest, digest)
            if actual == digest:
                return url
            _failed(failures, f"{url}: digest mismatch, expected {digest}, got {actual}")
            break
    dest.unlink(missing_ok=True)
    raise DownloadError(f"could not fetch {name} from any mirror:\n  " + "\n  ".join(failures))


def fetch_all(files: dict[str, str], mirrors: list[str], out_dir: Path, timeout_s: float, retries: int) -> None:
    """Fetch every `name -> digest` into `out_dir`; raises DownloadError on the first file no mirror serves."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, digest in files.items():
        url = fetch(name, mirrors, digest, out_dir / name, timeout_s, retries)
        print(f"fetched {name} from {url}")
