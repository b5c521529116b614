"""Files the pipeline reads back, models/<model>.pt (evaluate) and .resume/<model>/<key>.pt (train), are
checked against what our code writes before they are used: a well-typed file that does not fit this
model and data is one line, exit 1, nothing written, in bounded memory."""
import io
import shutil
import signal
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from fewlabels.models import build_model
from test_hostile import run_stage
from test_interrupt import MODEL, start, stage_inputs, train_stage, wait_for_resume_state

pytestmark = pytest.mark.slow
NO_AS_LIMIT = 1 << 40  # torch maps more address space than any useful limit: peak RSS is what is compared


def deflated(path: Path) -> None:
    """The same archive with every member compressed: what torch.save never writes."""
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info, data in members:
            dst.writestr(info.filename, data)


def resave(path: Path, change) -> None:
    obj = torch.load(path, weights_only=True)
    obj = change(obj)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished train stage: the model file evaluate reads, and its genuine evaluate's peak RSS."""
    work = stage_inputs(tmp_path_factory.mktemp("trained") / "work", n=300)
    assert train_stage(work).returncode == 0
    return work


@pytest.fixture(scope="module")
def genuine_peak(trained, tmp_path_factory) -> int:
    work = tmp_path_factory.mktemp("genuine") / "work"
    shutil.copytree(trained, work)
    status, stderr, peak = run_stage(work, "stages.evaluate", MODEL, as_limit=NO_AS_LIMIT)
    assert status == 0, stderr
    return peak


def _set(key, value):
    def change(record):
        record[key] = value
        return record
    return change


def _dag(depth: int) -> list:
    node = []
    for _ in range(depth):
        node = [node, node]  # pickle writes each list once and refers back to it: a file of a few KB
    return node


def _weights(value: float):
    def change(record):
        first = next(iter(record["state_dict"]))
        record["state_dict"][first].view(-1)[0] = value
        return record
    return change


def many_members(path: Path, n: int = 300_000) -> None:
    """A stored zip of `n` empty members: torch never writes one, and listing them costs memory (the 88 MB of a
    million cost 1.2 GB): refused by its size on disk before the zip is opened."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(n):
            archive.writestr(f"m/{i}", b"")


def _other_architecture(record):
    record["state_dict"] = build_model("cnn", 1, 28, 10).state_dict()
    return record


def _big_tensor(record):
    record["state_dict"]["conv1.weight"] = torch.zeros(16 << 20)  # 64 MiB where 600 bytes belong
    return record


MODEL_CASES = {
    "unknown model": (_set("model", "resnet9000"), "it holds model 'resnet9000', not 'lenet'"),
    "another architecture": (_other_architecture, "state_dict: unexpected key 'classifier.4.bias'"),
    "2**31 channels": (_set("channels", 2**31), "its channels 2147483648 differ from the data's 1"),
    "mean a string": (_set("mean", "abc"), "mean is str, not list"),
    "size 0": (_set("size", 0), "its size 0 differ from the data's 28"),
    "30,000 classes": (_set("classes", [str(i) for i in range(30000)]), "its classes is list of 30,000, unlike"),
    # a list that holds itself 40 levels deep: 2**40 items once turned into text, a few bytes in the file
    "self-referencing model name": (_set("model", _dag(40)), "model is list, not str"),
    "self-referencing classes": (_set("classes", _dag(40)), "its classes is list of 2, unlike the data's"),
    "a NaN weight": (_weights(float("nan")), "holds values that are not finite or beyond 1e+06"),
    "an infinite weight": (_weights(float("-inf")), "holds values that are not finite or beyond 1e+06"),
    "a weight of 1e38": (_weights(1e38), "holds values that are not finite or beyond 1e+06"),
    "a million members": (None, "bytes, more than the "),
    "std 0": (_set("std", [0.0]), "std [0.0] are not finite positive numbers"),
    "history beyond its epochs": (_set("epochs_run", 1), "history is list of 3 rows, not at most 1 rows"),
    "a big tensor": (_big_tensor, "bytes, more than the "),
    "compressed": (None, "it holds a compressed member, which torch.save never writes"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_evaluate_refuses_a_model_file_that_does_not_fit(trained, genuine_peak, tmp_path, case):
    change, message = MODEL_CASES[case]
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    path = work / "models" / f"{MODEL}.pt"
    if case == "a million members":
        many_members(path)
    elif change is None:
        deflated(path)
    else:
        resave(path, change)
    status, stderr, peak = run_stage(work, "stages.evaluate", MODEL, as_limit=NO_AS_LIMIT)
    assert status == 1, stderr
    [line] = stderr.splitlines()
    assert line.startswith(f"error: models/{MODEL}.pt is not a") and message in line, line
    assert line.endswith(f"rerun `dvc repro -f train@{MODEL}`"), line
    assert not (work / "metrics").exists() and not (work / "eval").exists()
    assert peak < 2 * genuine_peak


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A train stage killed after its first epoch: a genuine resume state on disk."""
    work = stage_inputs(tmp_path_factory.mktemp("interrupted") / "work")
    proc = start(work, sys.executable, "-m", "stages.train", MODEL)
    wait_for_resume_state(work, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return work


def _history_rows(n):
    def change(state):
        state["counters"]["history"] = state["counters"]["history"][:1] * n
        return state
    return change


def _counter(name, value):
    def change(state):
        state["counters"][name] = value
        return state
    return change


RESUME_CASES = {
    "counters only": (lambda state: {"counters": {}}, "(it: missing key 'best_state')"),
    "a read-only property": (_counter("scored", 1), "(counters: unexpected key 'scored')"),
    "epoch beyond the run": (_counter("epoch", 7), "(counters: epoch 7, best epoch 1: not within this run's 3 epochs)"),
    # one row referred to a million times: a small file, and hours of replay into the curves
    "a million rows": (_history_rows(10**6), "(counters.history is list of 1,000,000 rows, not at most 3 rows)"),
    "weights of another shape": (lambda state: {**state, "model": build_model("cnn", 1, 28, 10).state_dict()},
                                 "(model: unexpected key "),
    "compressed": (None, "(it holds a compressed member, which torch.save never writes)"),
    "NaN weights": (lambda state: {**state, "model": {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
                                                      for k, v in state["model"].items()}},
                    "(model."),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_train_refuses_a_resume_state_that_is_not_this_runs(interrupted, tmp_path, case):
    change, message = RESUME_CASES[case]
    work = tmp_path / "work"
    shutil.copytree(interrupted, work)
    [path] = (work / ".resume" / MODEL).glob("*.pt")
    if change is None:
        deflated(path)
    else:
        resave(path, change)
    result = train_stage(work)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: .resume/{MODEL}/{path.name} is not a") and message in line, line
    assert line.endswith(f"delete it to start the run over: rm -r .resume/{MODEL}"), line
    assert not (work / "models").exists() and not (work / "runs").exists()
