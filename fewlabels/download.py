"""Fetch files from an ordered list of mirrors, verifying each against a digest before keeping it.

No transfer writes more than the dataset spec's ceiling for its file (fewlabels.datasets), so a hostile or
broken mirror cannot fill the disk, nor takes longer than its deadline, however slowly it trickles.
Redirects lead to http(s) only; a file:// mirror is the directory it names (the file's path is built from
it, never a URL the mirror could bend). What a server says reaches the terminal only escaped and cut short.
"""
import gzip
import hashlib
import http.client
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from fewlabels.errors import DataError

CHUNK = 1 << 20  # bytes per read: large enough to keep per-read overhead negligible
RETRY_DELAY_S = 1.0  # pause before retrying the same mirror
EXCERPT = 200  # characters of a server's words or a URL shown in a message


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """`text` for a terminal: control and non-ASCII characters escaped (\\x1b, \\u00e9), at most `limit`
    characters (then '...')."""
    shown = "".join(c if c.isascii() and c.isprintable() else ascii(c)[1:-1] for c in text[:limit + 1])
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


class DownloadError(DataError):
    """No mirror served a file with the expected digest (within the size a genuine copy has)."""


def file_digest(path: Path, digest: str, max_bytes: int) -> str:
    """Return `path`'s digest in the same 'algo:hex' form as `digest` ('md5:' or 'gunzip-sha256:').

    No genuine file is, or decompresses to, more than `max_bytes`: reading stops there, so a small gzip that
    inflates without end costs a bounded time.
    """
    algo = digest.partition(":")[0]
    if algo == "md5":
        h, opener = hashlib.md5(), open
    elif algo == "gunzip-sha256":
        h, opener = hashlib.sha256(), gzip.open
    else:
        raise ValueError(f"unknown digest kind {algo!r}: use 'md5:<hex>' or 'gunzip-sha256:<hex>'")
    size = 0
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    return f"{algo}:unreadable (more than the {max_bytes} bytes of a genuine file)"
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as err:  # not gzip, a truncated or a damaged gzip stream
        return f"{algo}:unreadable ({err})"
    return f"{algo}:{h.hexdigest()}"


class _HTTPRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Follows a redirect to http:// or https:// only (urllib would follow one to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme
        if scheme not in ("http", "https"):
            raise DownloadError(f"{excerpt(req.full_url)}: redirected to a {excerpt(scheme, 20)}:// URL; only "
                                "http(s) is followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


OPENER = urllib.request.build_opener(_HTTPRedirectsOnly)


def mirror_url(base: str, name: str) -> str:
    """The URL of file `name` on a mirror: appended to an http(s) base; for a file:// base, the file `name` in
    the directory the base names (its path parsed, so nothing after it can point elsewhere)."""
    parts = urllib.parse.urlsplit(base)
    if parts.scheme == "file":
        return (Path(urllib.request.url2pathname(parts.path)) / name).as_uri()
    return f"{base.rstrip('/')}/{name}"


def _stream(url: str, dest: Path, timeout_s: float, max_bytes: int, deadline_s: float | None) -> None:
    """Write what `url` serves into `dest`, refusing (DownloadError) more than `max_bytes` or more than
    `deadline_s` seconds (None: no deadline): a hostile or broken mirror cannot fill the disk, whatever length it announces or
    however long it streams. Each read returns what has arrived (read1), so the deadline is looked at at
    least every `timeout_s`."""
    deadline = time.monotonic() + (deadline_s if deadline_s is not None else float("inf"))
    with OPENER.open(url, timeout=timeout_s) as response, open(dest, "wb") as out:
        announced = (response.headers.get("Content-Length") or "").strip()
        if announced and not announced.isdigit():
            raise DownloadError(f"{excerpt(url)}: Content-Length {excerpt(announced, 40)!r} is not a number; "
                                "not downloaded")
        total = int(announced or 0) or None
        if total and total > max_bytes:
            raise DownloadError(f"{url}: {total} bytes, more than the {max_bytes} of a genuine file; not downloaded")
        # disable=None: a bar on a terminal only, so logs read in files get no \r redraws
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False,
                  disable=None) as bar:
            size = 0
            while chunk := response.read1(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"{url}: more than the {max_bytes} bytes of a genuine file; stopped there")
                if time.monotonic() > deadline:
                    raise DownloadError(f"{excerpt(url)}: not done after data.deadline_s = {deadline_s:g} s "
                                        f"({size} bytes); stopped there")
                out.write(chunk)
                bar.update(len(chunk))


def _failed(failures: list[str], message: str) -> None:
    """Record a failed attempt and report it now, so a bad mirror is visible even when a later one works."""
    failures.append(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def fetch(name: str, mirrors: list[str], digest: str, dest: Path, max_bytes: int, timeout_s: float = 30,
          retries: int = 2, deadline_s: float | None = None) -> str:
    """Download `name` from the first mirror that serves bytes matching `digest` into `dest`.

    Network errors are retried `retries` times per mirror; a digest mismatch, more than `max_bytes` (the
    most a genuine copy takes), more than `deadline_s` seconds or a malformed answer moves on to the next
    mirror at once. Returns the URL that succeeded; raises
    DownloadError when all fail, leaving no `dest`.
    """
    failures = []
    for base in mirrors:
        url = mirror_url(base, name)
        for attempt in range(retries + 1):
            try:
                _stream(url, dest, timeout_s, max_bytes, deadline_s)
            except DownloadError as err:  # too large, too slow, not a number: the mirror would do the same again
                _failed(failures, str(err))
                break
            # HTTPError, timeouts, refused, missing file; HTTPException: not HTTP, or cut off mid-transfer
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                _failed(failures, f"{excerpt(url)}: {excerpt(str(err))}")  # a server's words, escaped
                permanent = isinstance(err, urllib.error.HTTPError) and err.code < 500  # 404: retrying won't help
                if permanent:
                    break
                if attempt < retries:
                    time.sleep(RETRY_DELAY_S)
                continue
            actual = file_digest(dest, digest, max_bytes)
            if actual == digest:
                return url
            _failed(failures, f"{url}: digest mismatch, expected {digest}, got {actual}")
            break
        dest.unlink(missing_ok=True)  # a refused copy takes no disk while the next mirror is tried
    raise DownloadError(f"could not fetch {name} from any mirror:\n  " + "\n  ".join(failures))


def fetch_all(files: dict[str, str], max_bytes: dict[str, int], mirrors: list[str], out_dir: Path,
              timeout_s: float, retries: int, deadline_s: float | None = None) -> None:
    """Fetch every `name -> digest` in `files`, each at most `max_bytes[name]` long, into `out_dir`; raises
    DownloadError on the first file no mirror serves."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, digest in files.items():
        url = fetch(name, mirrors, digest, out_dir / name, max_bytes[name], timeout_s, retries, deadline_s)
        print(f"fetched {name} from {url}")
