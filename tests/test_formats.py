"""Parsers of the raw formats (fewlabels.formats) on fake files in the exact real formats."""
import dataclasses
import gzip
import pickle
import pickletools
import struct
import tarfile

import numpy as np
import pytest

import fakes
from fewlabels.datasets import DATASETS
from fewlabels.formats import (CIFAR_ALLOWED_GLOBALS, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, FormatError, _cifar_batch,
                               load_cifar_dataset, load_idx_dataset, parse_idx, safe_unpickle)

FASHION, CIFAR10 = DATASETS["fashion_mnist"], DATASETS["cifar10"]
IDX = {role: f.name for role, f in FASHION.files.items()}  # role -> file name
CIFAR = {role: f.name for role, f in CIFAR10.files.items()}


# idx ------------------------------------------------------------------------------------------

def test_fakes_use_the_dataset_file_names():
    # The fakes spell the names out; if datasets.py renames a file, mirrors would 404 on it.
    assert IDX == fakes.IDX_FILES and CIFAR == {"archive": fakes.CIFAR_ARCHIVE}


def test_idx_round_trip(tmp_path):
    written = fakes.make_idx_dataset(tmp_path, n_train=30, n_test=12)
    got = load_idx_dataset(tmp_path, FASHION)
    for split in ("train", "test"):
        assert got[f"x_{split}"].dtype == np.uint8
        assert got[f"x_{split}"].shape == (len(written[f"x_{split}"]), 1, 28, 28)  # channel axis added
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
    np.testing.assert_array_equal(parse_idx(tmp_path / "x", IDX_IMAGES_MAGIC, (3, 4), 2), images)


@pytest.mark.parametrize("role, expected_magic, item_shape, found_magic", [
    ("train_labels", IDX_IMAGES_MAGIC, (28, 28), IDX_LABELS_MAGIC),  # labels file where images are expected
    ("test_images", IDX_LABELS_MAGIC, (), IDX_IMAGES_MAGIC),
])
def test_idx_wrong_magic_is_named(tmp_path, role, expected_magic, item_shape, found_magic):
    fakes.make_idx_dataset(tmp_path, n_train=10, n_test=10)
    with pytest.raises(FormatError, match=f"magic number {found_magic}, expected {expected_magic}"):
        parse_idx(tmp_path / IDX[role], expected_magic, item_shape, 10)


def _images_idx() -> bytes:
    return fakes.idx_bytes(np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8), IDX_IMAGES_MAGIC)


def _corrupt_deflate(data: bytes) -> bytes:
    # The first byte after the 10-byte gzip header starts the first deflate block; setting its
    # BTYPE bits to 11 (reserved) makes zlib fail with "invalid block type".
    gz = bytearray(gzip.compress(data, mtime=0))
    gz[10] |= 0b110
    return bytes(gz)


@pytest.mark.parametrize("content, message", [
    (gzip.compress(_images_idx()[:-7], mtime=0), "truncated: .* need 3920 bytes of data, the file has 3913"),
    (gzip.compress(_images_idx() + b"\0", mtime=0), "padded: more data after the 3920 bytes"),  # trailing junk
    (_images_idx()[:-1], "truncated"),                                           # uncompressed, cut
    (_images_idx() + b"\0", "padded"),                                           # uncompressed, trailing junk
    (gzip.compress(_images_idx(), mtime=0)[:-20], "corrupt or truncated gzip"),  # gzip stream itself cut
    (gzip.compress(_images_idx(), mtime=0)[:12], "corrupt or truncated gzip"),
    (_corrupt_deflate(_images_idx()), "corrupt or truncated gzip"),              # damaged, not cut
    (gzip.compress(_images_idx()[:10], mtime=0), "truncated idx header"),
    (gzip.compress(b"\0\0\x08", mtime=0), "too short"),
    (b"", "too short"),
    # dims whose product overflows int64 to 0, so a length check alone would pass
    (struct.pack(">4I", IDX_IMAGES_MAGIC, 2**31, 2**31, 4), r"items of shape \[2147483648, 4\]"),
    (struct.pack(">4I", IDX_IMAGES_MAGIC, 2**32 - 1, 28, 28), "4294967295 items, the genuine file has at most 5"),
], ids=["cut-then-gzipped", "padded", "cut-uncompressed", "padded-uncompressed", "gzip-cut-tail",
        "gzip-cut-header", "gzip-corrupt", "header-cut", "too-short", "empty", "dims-overflow", "count-too-large"])
def test_idx_damaged_files_raise_format_error(tmp_path, content, message):
    path = tmp_path / IDX["train_images"]
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message) as err:
        parse_idx(path, IDX_IMAGES_MAGIC, (28, 28), 5)
    assert str(path) in str(err.value)  # the user is told which file to delete


def test_idx_image_and_label_counts_must_agree(tmp_path):
    fakes.make_idx_dataset(tmp_path, n_train=10, n_test=10)
    fakes.write_idx_gz(tmp_path / IDX["test_labels"], np.zeros(9, np.uint8), IDX_LABELS_MAGIC)
    with pytest.raises(FormatError, match="test has 10 images but 9 labels"):
        load_idx_dataset(tmp_path, FASHION)


# CIFAR-10 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_cifar_load(tmp_path, module):
    # The real archive's pickles name numpy.core (numpy 1); re-pickled copies may name numpy._core.
    expected = fakes.make_cifar_tar(tmp_path, n_per_batch=10, reconstruct_module=module)
    got = load_cifar_dataset(tmp_path, CIFAR10)
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
    assert globals_ <= CIFAR_ALLOWED_GLOBALS.keys()
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
        load_cifar_dataset(tmp_path, CIFAR10)
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
        load_cifar_dataset(tmp_path, CIFAR10)
    assert repr(name) in str(err.value)
    assert not (tmp_path.parent / "evil").exists()


def _batch_with(**changes):
    batch = fakes.cifar_batch(np.random.default_rng(1), 4, b"training batch 3 of 5")
    batch.update({k.encode(): v for k, v in changes.items()})
    return fakes.py2_pickle(batch)


@pytest.mark.parametrize("content, message", [
    (_batch_with(labels=[0, 1, 2, 10]), "integers in 0..9"),
    (_batch_with(labels=[0, 1, 2]), "4 integers"),
    (_batch_with(data=np.zeros((4, 3072), np.float32)), "dtype other than uint8"),  # refused before numpy reads it
    (_batch_with(data=np.zeros((4, 1024), np.uint8)), r"uint8 array \[N, 3072\]"),
    (fakes.py2_pickle([1, 2, 3]), "expected a dict"),
    (b"this is not a pickle", "not a valid pickle"),
    (_batch_with()[:100], "not a valid pickle"),  # truncated
    (b"", "not a valid pickle"),
], ids=["label-10", "label-count", "float-data", "narrow-data", "not-dict", "garbage", "truncated", "empty"])
def test_cifar_bad_batch_raises_format_error(tmp_path, content, message):
    fakes.make_cifar_tar(tmp_path, n_per_batch=4, replace={"cifar-10-batches-py/data_batch_3": content})
    with pytest.raises(FormatError, match=f"data_batch_3: .*{message}"):
        load_cifar_dataset(tmp_path, CIFAR10)


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
        load_cifar_dataset(tmp_path, CIFAR10)


def test_cifar_missing_member_is_named(tmp_path):
    members, _ = fakes._cifar_members(2, "numpy.core.multiarray", {})
    fakes._write_tar(tmp_path / fakes.CIFAR_ARCHIVE, [m for m in members if not m[0].name.endswith("test_batch")])
    with pytest.raises(FormatError, match="missing members.*test_batch"):
        load_cifar_dataset(tmp_path, CIFAR10)


def _genuine_members() -> list:
    members, _ = fakes._cifar_members(2, "numpy.core.multiarray", {})
    return members


def _with_pax_header(size: int) -> list:
    members = _genuine_members()
    members[1][0].pax_headers = {"comment": "x" * size}  # read whole by tarfile, before the member
    return members


def _chained_long_names(n: int) -> bytes:
    """`n` GNU long-name headers in a row: tarfile reads each by calling itself once more."""
    link = fakes._tar_info("././@LongLink", 10, tarfile.GNUTYPE_LONGNAME).tobuf(tarfile.GNU_FORMAT)
    return (link + b"x" * 10 + bytes(502)) * n + bytes(1024)


TAR_CASES = {  # name -> (writes the archive into a directory, what the error says)
    "pax-header-1MB": (lambda d: fakes._write_tar(d / fakes.CIFAR_ARCHIVE, _with_pax_header(1 << 20)),
                       "refusing an extended header of 1048593 bytes"),
    "long-name-100KB": (lambda d: fakes._write_tar(d / fakes.CIFAR_ARCHIVE, _genuine_members() + [
        (fakes._tar_info(f"{fakes.CIFAR_DIR}/{'x' * 100_000}", 1), b"x")], tarfile.GNU_FORMAT),
                        "refusing an extended header of 100021 bytes"),
    "chained-long-names": (lambda d: (d / fakes.CIFAR_ARCHIVE).write_bytes(gzip.compress(_chained_long_names(5000))),
                           "corrupt or truncated tar.gz .*recursion"),
    "sparse-member": (lambda d: fakes._write_tar(d / fakes.CIFAR_ARCHIVE, _genuine_members() + [
        (fakes._tar_info(f"{fakes.CIFAR_DIR}/sparse", 0, tarfile.GNUTYPE_SPARSE), b"")], tarfile.GNU_FORMAT),
                      "refusing sparse member 'cifar-10-batches-py/sparse'"),
    "65-members": (lambda d: fakes._write_tar(d / fakes.CIFAR_ARCHIVE, _genuine_members() + [
        (fakes._tar_info(f"{fakes.CIFAR_DIR}/dir{i}", kind=tarfile.DIRTYPE), None) for i in range(60)]),
                   "more than 64 members, the genuine archive has 9"),
    "member-twice": (lambda d: fakes._write_tar(d / fakes.CIFAR_ARCHIVE, _genuine_members() + _genuine_members()[1:2]),
                     "member 'cifar-10-batches-py/data_batch_1' appears twice"),
}


@pytest.mark.parametrize("case", sorted(TAR_CASES))
def test_cifar_tar_beyond_any_genuine_archive_is_refused(tmp_path, case):
    write, message = TAR_CASES[case]
    write(tmp_path)
    with pytest.raises(FormatError, match=f"{fakes.CIFAR_ARCHIVE}: {message}"):
        load_cifar_dataset(tmp_path, CIFAR10)


def test_cifar_more_images_than_the_genuine_split_is_refused(tmp_path):
    fakes.make_cifar_tar(tmp_path, n_per_batch=2)  # 10 train images, 2 test
    spec = dataclasses.replace(CIFAR10, max_images={"train": 8, "test": 2})
    with pytest.raises(FormatError, match="train batches hold 10 images, the genuine ones 8"):
        load_cifar_dataset(tmp_path, spec)
    assert load_cifar_dataset(tmp_path, dataclasses.replace(spec, max_images={"train": 10, "test": 2}))


def test_mutated_batch_pickles_raise_only_format_error():
    # 3,000 random byte edits of a genuine batch: each must load as a valid batch or raise FormatError (one line);
    # any other exception would be a traceback. (Found: numpy's dtype.__setstate__ raising SystemError on a
    # crafted state, SETITEM on an array raising IndexError.)
    genuine = fakes.py2_pickle(fakes.cifar_batch(np.random.default_rng(0), 4, b"training batch 1 of 5"))
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(3000):
        data = bytearray(genuine)
        for _ in range(rng.integers(1, 4)):
            pos, kind = rng.integers(len(data)), rng.integers(3)
            if kind == 0:
                data[pos] = rng.integers(256)
            elif kind == 1:
                del data[pos:pos + rng.integers(1, 8)]
            else:
                data[pos:pos] = rng.integers(0, 256, rng.integers(1, 8), dtype=np.uint8).tobytes()
        try:
            _cifar_batch(safe_unpickle(bytes(data), "data_batch_1", 1 << 12), "data_batch_1", CIFAR10)
            outcomes["loaded"] += 1
        except FormatError:
            outcomes["refused"] += 1
    assert outcomes["loaded"] > 100 and outcomes["refused"] > 1000  # both kinds of edit were tried


def test_cifar_batch_repickled_by_python3_at_protocol_2_loads(tmp_path):
    """Python 3 writes bytes at protocol 2 as _codecs.encode(text, 'latin1'): the one call it needs is
    accepted, and only for that."""
    batch = fakes.cifar_batch(np.random.default_rng(0), 10, b"training batch 1 of 5")
    data = pickle.dumps(batch, protocol=2)
    assert ("_codecs", "encode") in {tuple(arg.split(" ")) for op, arg, _ in pickletools.genops(data)
                                     if op.name == "GLOBAL"}
    loaded = safe_unpickle(data, "data_batch_1", max_ops=10_000)
    assert loaded[b"labels"] == batch[b"labels"] and loaded[b"filenames"] == batch[b"filenames"]
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    evil = pickle.dumps(batch, protocol=2).replace(b"latin1", b"utf_16")
    with pytest.raises(FormatError, match="calls _codecs.encode other than to write bytes as latin-1 text"):
        safe_unpickle(evil, "data_batch_1", max_ops=10_000)
