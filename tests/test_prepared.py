"""data/prepared/<dataset>/: the same arrays give the same bytes on any host (so the same md5 in dvc.lock).

The bytes are pinned from the formats' specifications, not from what the code happened to write once:
an .npy file is the NPY 1.0 header (magic, version, header length, a dict padded to 64 bytes) followed by
the raw array; classes.json is a JSON list and a newline. Nothing in either depends on the Python release,
the time, or the file name (a .npz would add zip headers that do).
"""
import json
import re
import struct

import numpy as np
import pytest

import fakes
from fewlabels import prepared
from fewlabels.datasets import DATASETS
from fewlabels.errors import DataError
from fewlabels.formats import load_idx_dataset


def npy_v1(array: np.ndarray) -> bytes:
    """The NPY format version 1.0, written out by hand from numpy's format specification."""
    header = f"{{'descr': '{array.dtype.str}', 'fortran_order': False, 'shape': {array.shape}, }}"
    unpadded = 6 + 2 + 2 + len(header) + 1  # magic, version, header length, header, newline
    header += " " * (-unpadded % 64) + "\n"  # the whole preamble is a multiple of 64 bytes
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + array.tobytes()


@pytest.fixture
def fake(tmp_path):
    raw = tmp_path / "raw"
    fakes.make_idx_dataset(raw, n_train=30, n_test=10)
    return load_idx_dataset(raw, DATASETS["fashion_mnist"])


def test_prepared_files_are_exactly_their_specification(fake, tmp_path):
    classes = DATASETS["fashion_mnist"].classes
    prepared.save(tmp_path / "prepared", fake, classes)
    files = {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()}
    assert sorted(files) == sorted([f"{a}.npy" for a in prepared.ARRAYS] + ["classes.json"])
    for name in prepared.ARRAYS:
        assert files[f"{name}.npy"] == npy_v1(np.ascontiguousarray(fake[name])), name
    assert files["classes.json"] == (json.dumps(list(classes)) + "\n").encode()


def test_prepared_bytes_do_not_depend_on_where_or_when_they_were_written(fake, tmp_path):
    for name in ("a", "b"):
        prepared.save(tmp_path / name, fake, ("x", "y"))
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == \
           {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}


SPEC = DATASETS["fashion_mnist"]


def test_load_returns_what_was_saved(fake, tmp_path):
    prepared.save(tmp_path / "p", fake, SPEC.classes)
    back = prepared.load(tmp_path / "p", SPEC, *prepared.ARRAYS, "classes")
    for name in prepared.ARRAYS:
        np.testing.assert_array_equal(back[name], fake[name])
    assert back["classes"] == list(SPEC.classes)


def test_a_missing_prepared_file_is_a_data_error_naming_the_fix(fake, tmp_path):
    prepared.save(tmp_path / "p", fake, SPEC.classes)
    (tmp_path / "p" / "y_train.npy").unlink()
    with pytest.raises(DataError, match=r"y_train.npy is missing: run `dvc repro -f unpack`"):
        prepared.load(tmp_path / "p", SPEC, "y_train")


def _huge_header(path):
    """A genuine-looking header that announces 2**40 images: reading the array would ask for terabytes."""
    path.write_bytes(npy_v1(np.zeros((1, 1, 28, 28), np.uint8)).replace(b"(1, 1, 28, 28)", b"(1099511627776, 1, 28, 28)"))


TAMPERED = {  # file -> (how it is tampered with, what the one line says)
    "x_train.npy": [(_huge_header, "not uint8 [N, 1, 28, 28] with N <= 60,000"),
                    (lambda p: np.save(p, np.zeros((3, 1, 28, 28), np.float32)), "<f4 [3, 1, 28, 28], not uint8"),
                    (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00" + b"{" * 100), "no .npy header"),
                    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "unreadable")],
    "y_train.npy": [(lambda p: np.save(p, np.array([0, 10] * 15)), "labels from 0 to 10, not within [0, 10)"),
                    (lambda p: np.save(p, np.array([-1] * 30)), "labels from -1 to -1"),
                    (lambda p: np.save(p, np.array([object()] * 30), allow_pickle=True), "|O [30], not int64")],
    "classes.json": [(lambda p: p.write_text('["a", "b"]'), "not the dataset's class names"),
                     (lambda p: p.write_text("[" * 100000), "more than 65,536 bytes"),
                     (lambda p: p.write_text("{"), "not JSON")],
}


@pytest.mark.parametrize("name, case", [(n, i) for n, cases in TAMPERED.items() for i in range(len(cases))])
def test_a_tampered_prepared_file_is_one_line_naming_it_and_the_fix(fake, tmp_path, name, case):
    prepared.save(tmp_path / "p", fake, SPEC.classes)
    tamper, message = TAMPERED[name][case]
    tamper(tmp_path / "p" / name)
    with pytest.raises(DataError) as err:
        prepared.load(tmp_path / "p", SPEC, *prepared.ARRAYS, "classes")
    line = str(err.value)
    assert line.startswith(f"{tmp_path / 'p' / name} is not what unpack writes (") and message in line, line
    assert line.endswith(f"run `dvc repro -f unpack` to rebuild {tmp_path / 'p'}") and "\n" not in line


def test_images_and_labels_of_a_split_must_pair_up(fake, tmp_path):
    prepared.save(tmp_path / "p", fake, SPEC.classes)
    np.save(tmp_path / "p" / "y_test.npy", fake["y_test"][:-1])
    with pytest.raises(DataError, match="10 test images but 9 labels"):
        prepared.load(tmp_path / "p", SPEC, "x_test", "y_test")


@pytest.mark.parametrize("array, message", [
    (np.array([0, 2, 5]), None),
    (np.array([], np.int64), None),  # nothing unlabeled at labeled_frac 1.0
    (np.array([0, 2, 2]), "not sorted distinct positions in [0, 10)"),
    (np.array([3, 10]), "not sorted distinct positions in [0, 10)"),
    (np.array([-1, 3]), "not sorted distinct positions in [0, 10)"),
    (np.array([0.5, 1.0]), "<f8 [2], not int64 [N]"),
    (np.arange(11), "int64 [N] with N <= 10"),
])
def test_index_files_are_sorted_distinct_positions(tmp_path, array, message):
    np.save(tmp_path / "i.npy", array)
    if message is None:
        np.testing.assert_array_equal(prepared.load_indices(tmp_path / "i.npy", 10, "fix"), array)
    else:
        with pytest.raises(DataError, match=f"^{tmp_path / 'i.npy'} is not an index file .*{re.escape(message)}.*; fix$"):
            prepared.load_indices(tmp_path / "i.npy", 10, "fix")
