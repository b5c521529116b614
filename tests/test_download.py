"""fewlabels.download.fetch against local mirrors: corrupt, dead, broken, flaky, file://."""
import gzip
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fakes
from dvcrepo import child_env, copy_pipeline
from fewlabels import download
from fewlabels.datasets import DATASETS, gzip_bound
from fewlabels.download import DownloadError, fetch, fetch_all

NAME = "train-labels-idx1-ubyte.gz"
CAP = 1 << 20  # bytes a file may take here: far more than the 100-label file these tests fetch
FAST = {"max_bytes": CAP, "timeout_s": 2, "retries": 1}  # one retry exercises the retry path, quickly


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0)


@pytest.fixture
def good(tmp_path):
    """A directory holding the genuine file; returns (directory, its bytes, its digest)."""
    directory = tmp_path / "good"
    directory.mkdir()
    path = fakes.write_idx_gz(directory / NAME, np.arange(100, dtype=np.uint8) % 10, fakes.LABELS_MAGIC)
    return directory, path.read_bytes(), fakes.digest_of(path)


def _mirror_dir(tmp_path, name: str, content: bytes | None) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    if content is not None:
        (directory / NAME).write_bytes(content)
    return directory


def _damaged_deflate(genuine: bytes) -> bytes:
    data = bytearray(gzip.compress(gzip.decompress(genuine), mtime=0))
    data[10] |= 0b110  # reserved deflate block type: zlib fails with "invalid block type"
    return bytes(data)


CORRUPTIONS = {  # same file name, wrong content
    "other-content": lambda genuine: gzip.compress(b"\0\0\x08\x01\0\0\0\x01\x07", mtime=0),
    "not-gzip": lambda genuine: b"<html>mirror maintenance</html>",
    "cut-gzip": lambda genuine: genuine[: len(genuine) // 2],
    "damaged-gzip": _damaged_deflate,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_mirror_is_reported_and_next_used(tmp_path, good, corruption, capsys):
    good_dir, genuine, digest = good
    bad_dir = _mirror_dir(tmp_path, "bad", CORRUPTIONS[corruption](genuine))
    dest = tmp_path / "out"
    dest.mkdir()
    bad_hits = []
    with fakes.serve(bad_dir, bad_hits) as bad_url, fakes.serve(good_dir) as good_url:
        # Alone, the corrupt mirror fails with the mismatch spelled out.
        mismatch = f"{bad_url}/{NAME}: digest mismatch, expected {digest}, got gunzip-sha256:"
        with pytest.raises(DownloadError, match=re.escape(mismatch)):
            fetch(NAME, [bad_url], digest, dest / NAME, **FAST)
        assert bad_hits == [f"/{NAME}"]  # a mismatch is not retried: the mirror would serve the same bytes
        capsys.readouterr()
        # Ahead of a good mirror, it is passed over (and reported) and the good copy kept.
        fetch_all({NAME: digest}, {NAME: CAP}, [bad_url, good_url], dest, FAST["timeout_s"], FAST["retries"])
    assert (dest / NAME).read_bytes() == genuine
    out, err = capsys.readouterr()
    assert f"fetched {NAME} from {good_url}/{NAME}" in out
    assert f"warning: {mismatch}" in err


@pytest.fixture
def broken_mirror(request, tmp_path):
    """Yields the base URL of a mirror broken in the way named by the test's parameter."""
    kind = request.param
    if kind == "dead":  # connection refused
        yield f"http://127.0.0.1:{fakes.free_port()}"
    elif kind in ("missing", "always-503"):
        with fakes.serve(_mirror_dir(tmp_path, "empty", None), fail_first=10**6 if kind == "always-503" else 0) as url:
            yield url
    elif kind == "missing-file-url":
        yield _mirror_dir(tmp_path, "empty", None).as_uri()
    else:
        responses = {
            "not-http": b"SSH-2.0-OpenSSH_9.2\r\n",  # something else listens on that port
            "cut-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\nabc",
            "hangs-up": b"",
            "bad-length": b"HTTP/1.0 200 OK\r\nContent-Length: abc\r\n\r\nabc",
            "ftp-redirect": b"HTTP/1.0 302 Found\r\nLocation: ftp://127.0.0.1/x.gz\r\n\r\n",
        }
        with fakes.serve_raw(responses[kind]) as url:
            yield url


@pytest.mark.parametrize("broken_mirror", ["dead", "missing", "always-503", "missing-file-url",
                                           "not-http", "cut-chunked", "hangs-up", "bad-length", "ftp-redirect"],
                         indirect=True)
def test_broken_mirror_is_skipped(tmp_path, good, broken_mirror):
    good_dir, genuine, digest = good
    dest = tmp_path / "out" / NAME
    dest.parent.mkdir()
    with fakes.serve(good_dir) as good_url:
        assert fetch(NAME, [broken_mirror, good_url], digest, dest, **FAST) == f"{good_url}/{NAME}"
    assert dest.read_bytes() == genuine


def test_unresponsive_mirror_times_out(tmp_path, good):
    good_dir, genuine, digest = good
    with fakes.serve_raw(b"", delay=5) as slow_url, fakes.serve(good_dir) as good_url:
        fetch(NAME, [slow_url, good_url], digest, tmp_path / NAME, CAP, timeout_s=0.3, retries=0)
    assert (tmp_path / NAME).read_bytes() == genuine


@pytest.mark.parametrize("retries, succeeds", [(0, False), (1, True)])
def test_transient_error_is_retried_on_the_same_mirror(tmp_path, good, retries, succeeds):
    good_dir, genuine, digest = good
    hits = []
    with fakes.serve(good_dir, hits, fail_first=1) as url:  # one 503, then the file
        if succeeds:
            fetch(NAME, [url], digest, tmp_path / NAME, CAP, timeout_s=2, retries=retries)
            assert (tmp_path / NAME).read_bytes() == genuine
        else:
            with pytest.raises(DownloadError, match="503"):
                fetch(NAME, [url], digest, tmp_path / NAME, CAP, timeout_s=2, retries=retries)
    assert len(hits) == retries + 1


def test_missing_file_is_not_retried(tmp_path, good):
    hits = []
    with fakes.serve(_mirror_dir(tmp_path, "empty", None), hits) as url:
        with pytest.raises(DownloadError, match="404"):
            fetch(NAME, [url], good[2], tmp_path / NAME, CAP, timeout_s=2, retries=3)
    assert len(hits) == 1  # a 404 will not change on retry


def test_all_mirrors_failing_lists_each_and_leaves_nothing(tmp_path, good):
    _, genuine, digest = good
    corrupt_dir = _mirror_dir(tmp_path, "corrupt", CORRUPTIONS["other-content"](genuine))
    actual = fakes.digest_of(corrupt_dir / NAME)
    dead = f"http://127.0.0.1:{fakes.free_port()}"
    dest_dir = tmp_path / "out"
    dest_dir.mkdir()
    with fakes.serve(corrupt_dir) as corrupt_url:
        with pytest.raises(DownloadError) as err:
            fetch(NAME, [corrupt_url, dead, corrupt_dir.as_uri()], digest, dest_dir / NAME, **FAST)
    message = str(err.value)
    assert f"{corrupt_url}/{NAME}: digest mismatch, expected {digest}, got {actual}" in message
    assert f"{corrupt_dir.as_uri()}/{NAME}: digest mismatch, expected {digest}, got {actual}" in message
    assert message.count(f"{dead}/{NAME}:") == FAST["retries"] + 1  # each refused attempt is listed
    assert list(dest_dir.iterdir()) == []  # the corrupt download is not left behind


def test_file_url_mirror(tmp_path, good):
    good_dir, genuine, digest = good
    assert fetch(NAME, [good_dir.as_uri()], digest, tmp_path / NAME, **FAST) == f"{good_dir.as_uri()}/{NAME}"
    assert (tmp_path / NAME).read_bytes() == genuine


def test_gunzip_digest_accepts_recompressed_copy_md5_does_not(tmp_path, good):
    # Debian ships the idx files recompressed: same content, different gzip bytes. gunzip-sha256
    # must accept such a copy; md5 (of the archive as downloaded) must not.
    good_dir, genuine, digest = good
    recompressed = gzip.compress(gzip.decompress(genuine), compresslevel=1, mtime=1234567890)
    assert recompressed != genuine
    copy_dir = _mirror_dir(tmp_path, "debian", recompressed)
    fetch(NAME, [copy_dir.as_uri()], digest, tmp_path / NAME, **FAST)
    assert (tmp_path / NAME).read_bytes() == recompressed

    md5 = download.file_digest(good_dir / NAME, "md5:", CAP)
    (tmp_path / "md5").mkdir()
    fetch(NAME, [good_dir.as_uri()], md5, tmp_path / "md5" / NAME, **FAST)  # the original itself passes
    with pytest.raises(DownloadError, match=f"digest mismatch, expected {md5}, got md5:"):
        fetch(NAME, [copy_dir.as_uri()], md5, tmp_path / NAME, **FAST)


def test_download_stage_is_all_or_nothing(tmp_path):
    # A mirror holding only some of the files: the stage fails and leaves no data/raw directory,
    # even though the first files fetched fine (DVC would otherwise see a half-filled output).
    mirror = tmp_path / "mirror"
    fakes.make_idx_dataset(mirror, n_train=10, n_test=10)
    work = copy_pipeline(tmp_path / "work", {"data.sources.fashion_mnist": [mirror.as_uri()],
                                             "dataset": "fashion_mnist", "data.retries": 0})
    fakes.pin_digests(work, "fashion_mnist", mirror)
    (mirror / fakes.IDX_FILES["test_labels"]).unlink()  # fetched last, after the other three
    result = subprocess.run([sys.executable, "-m", "stages.download"], cwd=work, env=child_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "could not fetch t10k-labels-idx1-ubyte.gz" in result.stderr
    assert "Traceback" not in result.stderr
    assert "%|" not in result.stderr  # stderr is a pipe here, not a terminal: no progress bars (or their redraws)
    assert not (work / "data" / "raw" / "fashion_mnist").exists()
    assert [p.name for p in (work / "data" / "raw").iterdir()] == []  # no leftover temporary directory


# What genuine copies from known mirrors take, in bytes: upstream's Fashion-MNIST and MNIST, Debian's recompressed
# Fashion-MNIST (dataset-fashion-mnist), Toronto's CIFAR-10. Each must fit under the spec's ceiling.
GENUINE_SIZES = {
    "fashion_mnist": [{"train-images-idx3-ubyte.gz": 26421880, "train-labels-idx1-ubyte.gz": 29515,
                       "t10k-images-idx3-ubyte.gz": 4422102, "t10k-labels-idx1-ubyte.gz": 5148},
                      {"train-images-idx3-ubyte.gz": 26421856, "train-labels-idx1-ubyte.gz": 29491,
                       "t10k-images-idx3-ubyte.gz": 4422079, "t10k-labels-idx1-ubyte.gz": 5125}],
    "mnist": [{"train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
               "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542}],
    "cifar10": [{"cifar-10-python.tar.gz": 170498071}],
}


@pytest.mark.parametrize("dataset", sorted(GENUINE_SIZES))
def test_every_genuine_copy_fits_under_the_ceiling(dataset):
    spec = DATASETS[dataset]
    for sizes in GENUINE_SIZES[dataset]:
        assert sizes.keys() == spec.max_file_bytes.keys() == {file.name for file in spec.files.values()}
        for name, size in sizes.items():
            assert size <= spec.max_file_bytes[name], name


def _form(digest: str) -> tuple[str, int, bool]:
    """('md5', 32, True) for 'md5:' and 32 lowercase hex digits."""
    kind, _, hexdigits = digest.partition(":")
    return kind, len(hexdigits), set(hexdigits) <= set("0123456789abcdef")


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_digest_has_the_form_the_download_computes(tmp_path, dataset):
    # A digest of another kind, length or case would refuse every copy of the file, however genuine.
    path = fakes.write_idx_gz(tmp_path / NAME, np.zeros(3, np.uint8), fakes.LABELS_MAGIC)
    for file in DATASETS[dataset].files.values():
        assert _form(file.digest) == _form(download.file_digest(path, file.digest, CAP)), file.name


@pytest.mark.parametrize("level", [0, 1, 9])
def test_gzip_bound_holds_for_incompressible_data_at_any_level(level):
    # A mirror may recompress at any level; random bytes are deflate's worst case (stored blocks).
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    assert len(gzip.compress(data, compresslevel=level)) <= gzip_bound(len(data))


def test_gzip_digest_stops_at_the_ceiling(tmp_path):
    # A small gzip that inflates beyond the most a genuine file holds is not hashed to its end.
    path = tmp_path / NAME
    path.write_bytes(gzip.compress(bytes(3 << 20), mtime=0))
    digest = download.file_digest(path, "gunzip-sha256:", 4 << 20)
    assert digest.startswith("gunzip-sha256:") and len(digest) == len("gunzip-sha256:") + 64
    assert download.file_digest(path, "gunzip-sha256:", 2 << 20) == \
        f"gunzip-sha256:unreadable (more than the {2 << 20} bytes of a genuine file)"


def test_fetch_refuses_a_file_url_larger_than_the_ceiling(tmp_path, good):
    # file:// mirrors announce their size (Content-Length from the file system): refused before reading.
    good_dir, genuine, _ = good
    digest = download.file_digest(good_dir / NAME, "md5:", CAP)  # of the file as is: its size is all that counts
    with pytest.raises(DownloadError, match=f"{len(genuine)} bytes, more than the {len(genuine) - 1} of a genuine"):
        fetch(NAME, [good_dir.as_uri()], digest, tmp_path / NAME, len(genuine) - 1, timeout_s=2, retries=0)
    assert not (tmp_path / NAME).exists()
    assert fetch(NAME, [good_dir.as_uri()], digest, tmp_path / NAME, len(genuine), timeout_s=2, retries=0)


@pytest.mark.parametrize("response, said", [
    (b"HTTP/1.0 200 OK\r\nContent-Length: abc\r\n\r\nabc", "Content-Length 'abc' is not a number; not downloaded"),
    (b"HTTP/1.0 302 Found\r\nLocation: ftp://127.0.0.1/x.gz\r\n\r\n",
     "redirected to a ftp:// URL; only http(s) is followed"),
    # a reply that is not HTTP: its bytes reach the terminal escaped (no terminal control) and cut short
    (b"\x1b]0;owned\x07\x1b[2J" + b"A" * 5000 + b"\r\n", "\\x1b]0;owned\\x07\\x1b[2J"),
])
def test_a_malformed_answer_is_one_escaped_bounded_line_and_the_next_mirror_is_tried(tmp_path, good, response, said,
                                                                                   capsys):
    good_dir, genuine, digest = good
    with fakes.serve_raw(response) as bad_url, fakes.serve(good_dir) as good_url:
        assert fetch(NAME, [bad_url, good_url], digest, tmp_path / NAME, **FAST) == f"{good_url}/{NAME}"
    [warning, *_] = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"warning: {bad_url}/{NAME}: ") and said in warning, warning
    assert "\x1b" not in warning and len(warning) < 500


def test_a_mirror_that_trickles_is_given_up_at_the_deadline(tmp_path, good):
    good_dir, genuine, digest = good
    with fakes.serve_trickle() as slow_url:
        with pytest.raises(DownloadError, match=r"not done after data.deadline_s = 0.3 s \(\d+ bytes\)"):
            fetch(NAME, [slow_url], digest, tmp_path / NAME, CAP, timeout_s=2, retries=0, deadline_s=0.3)
        with fakes.serve(good_dir) as good_url:
            fetch(NAME, [slow_url, good_url], digest, tmp_path / NAME, CAP, timeout_s=2, retries=0, deadline_s=0.3)
    assert (tmp_path / NAME).read_bytes() == genuine


def test_a_file_mirror_is_the_directory_it_names(tmp_path):
    # whatever follows the path, the file is looked for inside that directory: never /etc/passwd itself
    assert download.mirror_url("file:///etc/passwd#", NAME) == f"file:///etc/passwd/{NAME}"
    assert download.mirror_url("file:///srv/mirror/?x", NAME) == f"file:///srv/mirror/{NAME}"
    assert download.mirror_url("file:///srv/a%20b", NAME) == f"file:///srv/a%20b/{NAME}"
    assert download.mirror_url("http://h/x/", NAME) == f"http://h/x/{NAME}"
