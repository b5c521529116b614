"""Interruption at the stage level: Ctrl-C, a kill -9 of `dvc repro`, and a checkpoint that is not ours.

Ctrl-C leaves one line and no partial output; a killed training run resumes from its last finished
epoch when rerun and ends with the same model file, byte for byte, as a run that was never stopped.
"""
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fakes
from dvcrepo import REPO, child_env, commit, copy_pipeline, init, run, write_params
from fewlabels import prepared
from fewlabels.datasets import DATASETS
from fewlabels.splits import labeled_index, split_train_valid, valid_index

MODEL = "lenet"
TRAIN_ARGS = [MODEL]  # the stage finds its files where dvc.yaml has them (stages._common.layout)


def stage_inputs(directory: Path, n: int = 3000) -> Path:
    """params.yaml and the data stages' outputs for a 3-epoch CPU run of a few seconds an epoch."""
    directory.mkdir(parents=True, exist_ok=True)
    write_params(directory, {"models": [MODEL], "labeled_frac": 0.5, "train.epochs": 3, "train.device": "cpu"})
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), "y_train": np.arange(n) % 10,
              "x_test": rng.integers(0, 256, (50, 1, 28, 28), dtype=np.uint8), "y_test": np.arange(50) % 10}
    prepared.save(directory / "data/prepared/fashion_mnist", arrays, DATASETS["fashion_mnist"].classes)
    train, valid = split_train_valid(arrays["y_train"], 0.1, 0)
    labeled, unlabeled = labeled_index(train, arrays["y_train"], 0.5, 0, [str(c) for c in range(10)])
    index = {"labeled": labeled, "unlabeled": unlabeled, "valid": valid_index(valid, arrays["y_train"], 0.5, 0)}
    for sub, files in {"split": {"train": train, "valid": valid}, "index": index}.items():
        (directory / "data" / sub).mkdir()
        for name, array in files.items():
            np.save(directory / "data" / sub / f"{name}.npy", array)
    return directory


def as_from_a_terminal() -> None:
    """In the child: SIGINT's default disposition, as a command started from a terminal has it. A shell
    without job control starts background commands (`pytest ... &` in a script) with SIGINT ignored, which
    Python then never turns into KeyboardInterrupt: the Ctrl-C these tests send would go unheard."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cwd: Path, *cmd: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)} if cmd[0] == sys.executable else child_env()
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal, **kwargs)


def wait_until(done, proc: subprocess.Popen, what: str, timeout_s: float) -> None:
    """Poll done() while `proc` runs: the signal a test waits for is a file the child writes."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{what} never appeared"
        time.sleep(0.01)


def wait_for_resume_state(cwd: Path, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    """Until the first epoch's state is saved (the run is then mid-way: 3 epochs of a few seconds)."""
    wait_until(lambda: list((cwd / ".resume" / MODEL).glob("*.pt")), proc, "a resume state", timeout_s)


def train_stage(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.train", *TRAIN_ARGS], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)


def curves(cwd: Path) -> dict[str, list[tuple[str, str]]]:
    """DVCLive's curves without their wall-clock timestamps: {file: [(step, value), ...]}."""
    out = {}
    for tsv in sorted((cwd / "dvclive" / MODEL / "plots" / "metrics").rglob("*.tsv")):
        rows = [line.split("\t") for line in tsv.read_text().splitlines()]
        header = rows[0]
        out[str(tsv.relative_to(cwd))] = [(r[header.index("step")], r[-1]) for r in rows[1:]]
    return out


@pytest.mark.slow
def test_ctrl_c_in_training_is_one_line_and_the_rerun_resumes_to_the_same_model(tmp_path):
    whole = stage_inputs(tmp_path / "whole")
    assert train_stage(whole).returncode == 0

    cut = stage_inputs(tmp_path / "cut")
    proc = start(cut, sys.executable, "-m", "stages.train", *TRAIN_ARGS)
    wait_for_resume_state(cut, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    [line] = stderr.splitlines()
    assert line.startswith("interrupted: no model written; epoch ") and f"kept in .resume/{MODEL}/" in line, stderr
    assert not (cut / "models").exists() and not (cut / "runs").exists()  # nothing partial, no temporaries

    rerun = train_stage(cut)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming after epoch " in rerun.stdout
    assert (cut / f"models/{MODEL}.pt").read_bytes() == (whole / f"models/{MODEL}.pt").read_bytes()
    assert curves(cut) == curves(whole) and len(next(iter(curves(whole).values()))) == 3
    assert not (cut / ".resume" / MODEL).exists()  # a finished run removes its state


@pytest.mark.slow
def test_dvc_repro_killed_mid_training_resumes_to_the_same_model(tmp_path):
    mirror = tmp_path / "mirror"
    fakes.make_idx_dataset(mirror, n_train=3000, n_test=50)
    settings = {"models": [MODEL], "train.epochs": 3, "train.device": "cpu", "labeled_frac": 0.5,
                "data.sources.fashion_mnist": [mirror.as_uri()]}
    repos = {}
    for name in ("whole", "killed"):
        repos[name] = copy_pipeline(tmp_path / name, settings)
        fakes.pin_digests(repos[name], "fashion_mnist", mirror)
        init(repos[name])
        commit(repos[name], "pipeline")
    run(repos["whole"], "dvc", "repro")

    killed = repos["killed"]
    proc = start(killed, "dvc", "repro", start_new_session=True)  # its own process group: dvc and the stage
    wait_for_resume_state(killed, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (killed / f"models/{MODEL}.pt").exists()

    again = run(killed, "dvc", "repro")
    assert "resuming after epoch " in again
    for path in (f"models/{MODEL}.pt", f"metrics/{MODEL}.json"):
        assert (killed / path).read_bytes() == (repos["whole"] / path).read_bytes(), path
    assert "Data and pipelines are up to date" in run(killed, "dvc", "status")


class _Payload:
    def __reduce__(self):
        return os.system, ("touch pwned",)


AT_EXIT_STAGE = """
import atexit, pathlib, time
from stages._common import run

def slow_exit_handler():  # as torch._dynamo's and DVCLive's: work left for the interpreter's exit
    pathlib.Path("exiting").touch()
    while not pathlib.Path("go").exists():
        time.sleep(0.01)

def main():
    atexit.register(slow_exit_handler)
    pathlib.Path("started").touch()
    while True:
        time.sleep(0.01)

run(main)
"""


def test_a_second_ctrl_c_while_exiting_ends_the_stage_without_a_traceback(tmp_path):
    """Ctrl-C pressed twice, or DVC passing on the terminal's Ctrl-C: the second one lands in an exit handler.
    The stage still ends with its one line and exit status 130, not with that handler's traceback."""
    (tmp_path / "stage.py").write_text(AT_EXIT_STAGE)
    proc = start(tmp_path, sys.executable, "stage.py")
    wait_until((tmp_path / "started").exists, proc, "started", 120)
    proc.send_signal(signal.SIGINT)
    wait_until((tmp_path / "exiting").exists, proc, "exiting", 120)
    proc.send_signal(signal.SIGINT)
    (tmp_path / "go").touch()  # were the second Ctrl-C lost, the handler would end here, cleanly
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.strip() == "interrupted: nothing written", stderr


@pytest.mark.parametrize("content", ["garbage", "truncated", "code"])
def test_evaluate_refuses_a_checkpoint_that_is_not_ours(tmp_path, content):
    work = stage_inputs(tmp_path, n=100)
    (work / "models").mkdir()
    path = work / f"models/{MODEL}.pt"
    if content == "garbage":
        path.write_bytes(os.urandom(1000))
    elif content == "code":
        torch.save({"model": _Payload()}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    else:
        torch.save({"state_dict": {"w": torch.ones(100)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    result = subprocess.run([sys.executable, "-m", "stages.evaluate", MODEL], cwd=work, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"error: models/{MODEL}.pt is not a checkpoint written by the train stage (")
    assert line.endswith(f"rerun `dvc repro -f train@{MODEL}`") and "weights_only" not in line, line
    assert not (work / "metrics").exists() and not (work / "eval").exists() and not (work / "pwned").exists()


def test_ctrl_c_while_downloading_is_one_line_and_leaves_nothing(tmp_path):
    """A mirror that never answers: Ctrl-C ends the wait with one line, exit 130, and no data/raw at all."""
    received = threading.Event()
    with fakes.serve_raw(b"", delay=600, received=received) as url:
        write_params(tmp_path, {"data.sources.fashion_mnist": [url], "data.timeout_s": 600})
        proc = start(tmp_path, sys.executable, "-m", "stages.download")
        assert received.wait(timeout=300), proc.communicate()  # the request is sent: the stage is waiting
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.strip() == "interrupted: nothing written", stderr
    assert not (tmp_path / "data" / "raw").exists() or list((tmp_path / "data" / "raw").iterdir()) == []
