"""Faults the stages meet outside their inputs: a full disk, a dataset of no images, a resume folder that
is a symbolic link. Each is one line and exit 1, nothing half-written, and the rerun works."""
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fakes
from dvcrepo import REPO, commit, copy_pipeline, init, write_params
from test_interrupt import MODEL, stage_inputs, train_stage

pytestmark = pytest.mark.slow


def run_stage(work: Path, *args: str, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """`python -m <args>` in `work`; with `max_file_bytes`, writing more into one file fails as on a full disk."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then the write fails with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", *args], cwd=work, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=limit if max_file_bytes else None)


def raw_fashion_mnist(work: Path, n_train: int = 100) -> None:
    """A copy of the pipeline in `work` (its stages run from there) and a fake Fashion-MNIST downloaded into it."""
    mirror = work.parent / "mirror"
    fakes.make_idx_dataset(mirror, n_train=n_train, n_test=20)
    copy_pipeline(work, {"data.sources.fashion_mnist": [mirror.as_uri()]})
    fakes.pin_digests(work, "fashion_mnist", mirror)
    assert run_stage(work, "stages.download").returncode == 0


def test_a_full_disk_during_unpack_is_one_line_and_the_rerun_works(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    raw_fashion_mnist(work)
    full = run_stage(work, "stages.unpack", max_file_bytes=20_000)  # x_train.npy needs 78,528 bytes
    assert full.returncode == 1
    assert full.stderr == ("error: file size limit exceeded while writing data/prepared/fashion_mnist: nothing of "
                           "it was kept; free some space and rerun\n")
    assert os.listdir(work / "data" / "prepared") == []  # no temporary left either
    assert run_stage(work, "stages.unpack").returncode == 0


@pytest.mark.parametrize("in_dvc_repo, message", [
    # 100 bytes a file: DVCLive's first curve file is the first write that fails, then again as it ends
    (False, f"file size limit exceeded while DVCLive wrote dvclive/{MODEL}: free some space and rerun"),
    # in a DVC repository DVCLive first opens DVC's sqlite records, which fail as "disk I/O error"
    (True, f"DVCLive could not write its records (disk I/O error) for dvclive/{MODEL}: free some space and rerun"),
])
def test_a_full_disk_under_dvclive_is_one_line_and_the_rerun_works(tmp_path, in_dvc_repo, message):
    work = stage_inputs(tmp_path / "work", n=300)
    if in_dvc_repo:
        init(work)
        commit(work, "stage inputs")
    full = run_stage(work, "stages.train", MODEL, max_file_bytes=100)
    assert full.returncode == 1, full.stderr
    assert full.stderr == f"error: {message}\n"
    assert not (work / "models").exists()
    assert train_stage(work).returncode == 0


def test_a_full_disk_during_the_resume_save_is_one_line_and_the_rerun_works(tmp_path):
    work = stage_inputs(tmp_path / "work", n=300)
    full = run_stage(work, "stages.train", MODEL, max_file_bytes=200_000)  # lenet's state: ~2.6 MB
    assert full.returncode == 1, full.stderr
    [line] = full.stderr.splitlines()
    assert line.startswith(f"error: file size limit exceeded while writing .resume/{MODEL}/"), line
    assert not (work / "models").exists() and list((work / ".resume" / MODEL).iterdir()) == []
    assert train_stage(work).returncode == 0


def test_a_dataset_of_no_images_is_one_line(tmp_path):
    """Files that match their digests (pinned in the copy's fewlabels/datasets.py) but hold 0 images."""
    mirror = tmp_path / "mirror"
    fakes.make_idx_dataset(mirror, n_train=10, n_test=10)
    fakes.write_idx_gz(mirror / fakes.IDX_FILES["train_images"], np.zeros((0, 28, 28), np.uint8), 2051)
    fakes.write_idx_gz(mirror / fakes.IDX_FILES["train_labels"], np.zeros(0, np.uint8), 2049)
    work = copy_pipeline(tmp_path / "work", {"data.sources.fashion_mnist": [mirror.as_uri()]})
    fakes.pin_digests(work, "fashion_mnist", mirror)
    assert run_stage(work, "stages.download").returncode == 0
    result = run_stage(work, "stages.unpack")
    assert result.returncode == 1
    assert result.stderr == ("error: data/raw/fashion_mnist: the train split holds no images; fetch the dataset "
                             "again: rm -r data/raw/fashion_mnist && dvc repro download\n")
    assert not (work / "data" / "prepared").exists()


@pytest.mark.parametrize("link", [".resume", f".resume/{MODEL}"])
def test_a_symlinked_resume_folder_is_refused_and_its_target_kept(tmp_path, link):
    work = stage_inputs(tmp_path / "work", n=300)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("not the pipeline's")
    (work / link).parent.mkdir(parents=True, exist_ok=True)
    (work / link).symlink_to(outside)
    result = train_stage(work)
    assert result.returncode == 1
    assert result.stderr == (f"error: {link} is a symbolic link: a finished run deletes .resume/{MODEL}, which must "
                             f"not reach outside the checkout; make {link} a plain folder\n")
    assert (outside / "precious").read_text() == "not the pipeline's"
    (work / link).unlink()
    assert train_stage(work).returncode == 0


def test_the_check_stage_removes_what_killed_runs_left(tmp_path):
    """A download killed with kill -9 leaves its temporary folder; when DVC restores the download stage from
    its run cache, the stage never runs to remove it, but the check stage runs on every params edit."""
    work = tmp_path / "work"
    work.mkdir()
    write_params(work, {})
    finished = subprocess.Popen(["true"])
    finished.wait()
    left = work / "data" / "raw" / f".fashion_mnist.{finished.pid}.tmp"
    left.mkdir(parents=True)
    (left / "train-images-idx3-ubyte.gz").write_bytes(b"half a file")
    running = work / "data" / "raw" / f".fashion_mnist.{os.getpid()}.tmp"  # a live process's write: kept
    running.mkdir()
    result = run_stage(work, "stages.check")
    assert result.returncode == 0, result.stderr
    assert not left.exists() and running.is_dir()
    assert (work / "data" / "params.ok").read_text() == "params.yaml matches the schema in fewlabels/params.py\n"
