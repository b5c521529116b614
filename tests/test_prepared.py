"""data/prepared/<dataset>/: the same arrays give the same bytes on any host (so the same md5 in dvc.lock).

The bytes are pinned from the formats' specifications, not from what the code happened to write once:
an .npy file is the NPY 1.0 header (magic, version, header length, a dict padded to 64 bytes) followed by
the raw array; classes.json is a JSON list and a newline. Nothing in either depends on the Python release,
the time, or the file name (a .npz would add zip headers that do).
"""
import json
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


def test_load_returns_what_was_saved(fake, tmp_path):
    prepared.save(tmp_path / "p", fake, ("x", "y"))
    back = prepared.load(tmp_path / "p", *prepared.ARRAYS, "classes")
    for name in prepared.ARRAYS:
        np.testing.assert_array_equal(back[name], fake[name])
    assert back["classes"] == ["x", "y"]


def test_a_missing_prepared_file_is_a_data_error_naming_the_fix(fake, tmp_path):
    prepared.save(tmp_path / "p", fake, ("x", "y"))
    (tmp_path / "p" / "y_train.npy").unlink()
    with pytest.raises(DataError, match=r"y_train.npy is missing: run `dvc repro unpack`"):
        prepared.load(tmp_path / "p", "y_train")
