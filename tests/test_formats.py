"""Parsers of the raw formats (fewlabels.formats) on fake files in the exact real formats."""
import gzip
import pickle
import pickletools
import struct

import numpy as np
import pytest

import fakes
from fewlabels.datasets import DATASETS
from fewlabels.formats import (CIFAR_ALLOWED_GLOBALS, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, FormatError,
                               load_cifar_dataset, load_idx_dataset, parse_idx)

IDX = DATASETS["fashion_mnist"].files
CIFAR = DATASETS["cifar10"].files


# idx ------------------------------------------------------------------------------------------

def test_fakes_use_the_dataset_file_names():
    # The fakes spell the names out; if datasets.py renames a file, mirrors would 404 on it.
    assert IDX == fakes.IDX_FILES and CIFAR == {"archive": fakes.CIFAR_ARCHIVE}


@pytest.mark.parametrize("size", [28, 32])
def test_idx_round_trip(tmp_path, size):
    written = fakes.make_idx_dataset(tmp_path, n_train=30, n_test=12, size=size)
    got = load_idx_dataset(tmp_path, IDX)
    for split in ("train", "test"):
        assert got[f"x_{split}"].dtype == np.uint8
        assert got[f"x_{split}"].shape == (len(written[f"x_{split}"]), 1, size, size)  # channel axis added
        np.testing.assert_array_equal(got[f"x_{split}"][:, 0], written[f"x_{split}"])
        assert got[f"y_{split}"].dtype == np.int64
        np.testing.assert_array_equal(got[f"y_{split}"], written[f"y_{split}"])


def test_fake_idx_files_parse_identically_with_torchvision(tmp_path):
    # Checks the fakes themselves: torchvision's reader must see the same arrays in them.
    from torchvision.datasets.mnist import read_image_file, read_label_file

    written = fakes.make_idx_dataset(tmp_path, n_train=20, n_test=10)
    for role, reader in (("train_images", read_image_file), ("train_labels", read_label_file)):
        plain = tmp_path / IDX[role].removesuffix(".gz")
        plain.write_bytes(gzip.decompress((tmp_path / IDX[role]).read_bytes()))
        key = "x_train" if role == "train_images" else "y_train"
        np.testing.assert_array_equal(reader(str(plain)).numpy(), written[key])


def test_idx_uncompressed_file_is_accepted(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "x").write_bytes(fakes.idx_bytes(images, IDX_IMAGES_MAGIC))
    np.testing.assert_array_equal(parse_idx(tmp_path / "x", IDX_IMAGES_MAGIC), images)


@pytest.mark.parametrize("role, expected_magic, found_magic", [
    ("train_labels", IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC),  # labels file where images are expected
    ("test_images", IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC),
])
def test_idx_wrong_magic_is_named(tmp_path, role, expected_magic, found_magic):
    fakes.make_idx_dataset(tmp_path, n_train=10, n_test=10)
    with pytest.raises(FormatError, match=f"magic number {found_magic}, expected {expected_magic}"):
        parse_idx(tmp_path / IDX[role], expected_magic)


def _images_idx() -> bytes:
    return fakes.idx_bytes(np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8), IDX_IMAGES_MAGIC)


def _corrupt_deflate(data: bytes) -> bytes:
    # The first byte after the 10-byte gzip header starts the first deflate block; setting its
    # BTYPE bits to 11 (reserved) makes zlib fail with "invalid block type".
    gz = bytearray(gzip.compress(data, mtime=0))
    gz[10] |= 0b110
    return bytes(gz)


@pytest.mark.parametrize("content, message", [
    (gzip.compress(_images_idx()[:-7], mtime=0), "truncated or padded"),         # idx cut, then gzipped
    (gzip.compress(_images_idx() + b"\0", mtime=0), "truncated or padded"),      # trailing junk
    (_images_idx()[:-1], "truncated or padded"),                                 # uncompressed, cut
    (gzip.compress(_images_idx(), mtime=0)[:-20], "corrupt or truncated gzip"),  # gzip stream itself cut
    (gzip.compress(_images_idx(), mtime=0)[:12], "corrupt or truncated gzip"),
    (_corrupt_deflate(_images_idx()), "corrupt or truncated gzip"),              # damaged, not cut
    (gzip.compress(_images_idx()[:10], mtime=0), "truncated idx header"),
    (gzip.compress(b"\0\0\x08", mtime=0), "too short"),
    (b"", "too short"),
    # dims whose product overflows int64 to 0, so the length check alone would pass
    (struct.pack(">4I", IDX_IMAGES_MAGIC, 2**31, 2**31, 4), "need"),
], ids=["cut-then-gzipped", "padded", "cut-uncompressed", "gzip-cut-tail", "gzip-cut-header",
        "gzip-corrupt", "header-cut", "too-short", "empty", "dims-overflow"])
def test_idx_damaged_files_raise_format_error(tmp_path, content, message):
    path = tmp_path / IDX["train_images"]
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message) as err:
        parse_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(err.value)  # the user is told which file to delete


def test_idx_image_and_label_counts_must_agree(tmp_path):
    fakes.make_idx_dataset(tmp_path, n_train=10, n_test=10)
    fakes.write_idx_gz(tmp_path / IDX["test_labels"], np.zeros(9, np.uint8), IDX_LABELS_MAGIC)
    with pytest.raises(FormatError, match="test has 10 images but 9 labels"):
        load_idx_dataset(tmp_path, IDX)


# CIFAR-10 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_cifar_load(tmp_path, module):
    # The real archive's pickles name numpy.core (numpy 1); re-pickled copies may name numpy._core.
    expected = fakes.make_cifar_tar(tmp_path, n_per_batch=10, reconstruct_module=module)
    got = load_cifar_dataset(tmp_path, CIFAR)
    assert got["x_train"].shape == (50, 3, 32, 32) and got["x_test"].shape == (10, 3, 32, 32)
    assert got["x_train"].dtype == np.uint8 and got["y_train"].dtype == np.int64
    for key in ("x_train", "y_train", "x_test", "y_test"):  # batches 1..5 concatenated in order
        np.testing.assert_array_equal(got[key], expected[key])


def test_fake_cifar_pickles_are_python2_style(tmp_path):
    # Checks the fakes themselves: byte strings as (SHORT_)BINSTRING, never Python 3's _codecs.encode,
    # and only the numpy globals a real batch references.
    batch = fakes.cifar_batch(np.random.default_rng(0), 10, b"training batch 1 of 5")
    data = fakes.py2_pickle(batch)
    ops = list(pickletools.genops(data))
    names = {op.name for op, _, _ in ops}
    globals_ = {tuple(arg.split(" ")) for op, arg, _ in ops if op.name in ("GLOBAL", "STACK_GLOBAL")}
    assert data[:2] == b"\x80\x02"  # protocol 2
    assert {"SHORT_BINSTRING", "BINSTRING"} <= names and not names & {"BINUNICODE", "SHORT_BINUNICODE"}
    assert globals_ == {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}
    assert globals_ <= CIFAR_ALLOWED_GLOBALS
    loaded = pickle.loads(data, encoding="bytes")  # how the notebooks' `unpickle` reads them
    assert loaded[b"labels"] == batch[b"labels"] and loaded[b"filenames"] == batch[b"filenames"]
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])


@pytest.mark.parametrize("payload", sorted(fakes.PAYLOADS))
def test_cifar_malicious_pickle_is_refused_without_running(tmp_path, payload):
    # First prove the payload is live: a plain pickle.loads does create its marker.
    proof = tmp_path / "proof"
    pickle.loads(fakes.malicious_pickle_bytes(proof, payload))
    assert proof.exists()

    marker = tmp_path / "pwned"
    fakes.make_malicious_cifar_tar(tmp_path, marker, payload)
    with pytest.raises(FormatError, match="data_batch_1: refusing to unpickle global"):
        load_cifar_dataset(tmp_path, CIFAR)
    assert not marker.exists()


@pytest.mark.parametrize("name, kind", [
    ("../evil", "file"),
    ("cifar-10-batches-py/../../evil", "file"),
    ("/tmp/evil", "file"),
    ("cifar-10-batches-py/data_batch_1", "symlink"),   # would make the loader read /etc/passwd
    ("cifar-10-batches-py/link", "symlink"),
    ("cifar-10-batches-py/data_batch_1", "hardlink"),
])
def test_cifar_tar_unsafe_member_is_refused(tmp_path, name, kind):
    fakes.make_tar_with_member(tmp_path / fakes.CIFAR_ARCHIVE, name, kind)
    with pytest.raises(FormatError, match="refusing") as err:
        load_cifar_dataset(tmp_path, CIFAR)
    assert repr(name) in str(err.value)
    assert not (tmp_path.parent / "evil").exists()


def _batch_with(**changes):
    batch = fakes.cifar_batch(np.random.default_rng(1), 4, b"training batch 3 of 5")
    batch.update({k.encode(): v for k, v in changes.items()})
    return fakes.py2_pickle(batch)


@pytest.mark.parametrize("content, message", [
    (_batch_with(labels=[0, 1, 2, 10]), "integers in 0..9"),
    (_batch_with(labels=[0, 1, 2]), "4 integers"),
    (_batch_with(data=np.zeros((4, 3072), np.float32)), r"uint8 array \[N, 3072\]"),
    (_batch_with(data=np.zeros((4, 1024), np.uint8)), r"uint8 array \[N, 3072\]"),
    (fakes.py2_pickle([1, 2, 3]), "expected a dict"),
    (b"this is not a pickle", "not a valid pickle"),
    (_batch_with()[:100], "not a valid pickle"),  # truncated
    (b"", "not a valid pickle"),
], ids=["label-10", "label-count", "float-data", "narrow-data", "not-dict", "garbage", "truncated", "empty"])
def test_cifar_bad_batch_raises_format_error(tmp_path, content, message):
    fakes.make_cifar_tar(tmp_path, n_per_batch=4, replace={"cifar-10-batches-py/data_batch_3": content})
    with pytest.raises(FormatError, match=f"data_batch_3: .*{message}"):
        load_cifar_dataset(tmp_path, CIFAR)


def _corrupt_inside_member(archive, member: str) -> bytes:
    """The archive recompressed as two gzip members, split inside `member`'s data, the second damaged.

    (A gzip file may hold several members.) Decompression then fails while that member is being
    read, rather than while the tar headers are, which tarfile handles differently.
    """
    import tarfile

    tar_bytes = gzip.decompress(archive.read_bytes())
    with tarfile.open(archive, "r:gz") as tar:
        split = tar.getmember(member).offset_data + 100
    return gzip.compress(tar_bytes[:split], mtime=0) + _corrupt_deflate(tar_bytes[split:])


@pytest.mark.parametrize("damage", ["cut", "corrupt-in-header", "corrupt-in-member"])
def test_cifar_damaged_archive_raises_format_error(tmp_path, damage):
    fakes.make_cifar_tar(tmp_path, n_per_batch=4)
    archive = tmp_path / fakes.CIFAR_ARCHIVE
    data = archive.read_bytes()
    if damage == "cut":
        data = data[: len(data) // 2]
    elif damage == "corrupt-in-header":
        data = _corrupt_deflate(gzip.decompress(data))
    else:
        data = _corrupt_inside_member(archive, "cifar-10-batches-py/data_batch_2")
    archive.write_bytes(data)
    with pytest.raises(FormatError, match="corrupt or truncated tar.gz"):
        load_cifar_dataset(tmp_path, CIFAR)


def test_cifar_missing_member_is_named(tmp_path):
    members, _ = fakes._cifar_members(2, "numpy.core.multiarray", {})
    fakes._write_tar(tmp_path / fakes.CIFAR_ARCHIVE, [m for m in members if not m[0].name.endswith("test_batch")])
    with pytest.raises(FormatError, match="missing members.*test_batch"):
        load_cifar_dataset(tmp_path, CIFAR)
