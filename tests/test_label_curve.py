"""The label-efficiency curve: reading `dvc exp show --json`, and the one-command sweep end to end."""
import csv
import shutil

import matplotlib.image
import pytest

from fewlabels.curve import curve_points, curve_table, queue_tasks
from dvcrepo import REPO, commit, run
from test_pipeline_train import make_project


def record(frac, method, acc, timestamp, model="cnn"):
    """One commit/experiment record shaped like DVC 3's `dvc exp show --json`."""
    return {"rev": timestamp, "data": {
        "timestamp": timestamp,
        "params": {"params.yaml": {"data": {"labeled_frac": frac, "ssl": {"method": method}}}},
        "metrics": {f"metrics/{model}.json": {"data": {"test": {"accuracy": acc}}}} if acc is not None else {},
    }}


def exp_show(*experiments, baseline=record(1.0, "skip", 0.92, "2026-01-01T00:00:00")):
    """Workspace + one baseline commit whose experiments nest under experiments[].revs[], as DVC writes them."""
    return [record(1.0, "skip", 0.92, None) | {"rev": "workspace"},
            baseline | {"experiments": [{"revs": [e]} for e in experiments]}]


def test_curve_points_one_per_cell_newest_wins():
    show = exp_show(
        record(0.1, "skip", 0.85, "2026-01-02T00:00:00"),
        record(0.1, "skip", 0.87, "2026-01-03T00:00:00"),      # rerun of the same cell: newer wins
        record(0.1, "fixmatch", 0.90, "2026-01-02T00:00:00"),
        record(0.05, "fixmatch", None, "2026-01-04T00:00:00"),  # failed: no metrics, no point
    )
    assert curve_points(show, "cnn") == {(1.0, "skip"): 0.92, (0.1, "skip"): 0.87, (0.1, "fixmatch"): 0.90}


def test_curve_points_of_another_model_are_absent():
    assert curve_points(exp_show(record(0.1, "skip", 0.85, "t")), "bn_cnn") == {}


def test_curve_table_is_wide_and_sorted_with_gaps_as_none():
    points = {(0.1, "skip"): 0.87, (0.01, "skip"): 0.7, (0.1, "fixmatch"): 0.9}
    assert curve_table(points, ["skip", "fixmatch"]) == [
        {"labeled_frac": 0.01, "skip": 0.7, "fixmatch": None},
        {"labeled_frac": 0.1, "skip": 0.87, "fixmatch": 0.9},
    ]


@pytest.mark.slow
def test_queue_tasks_reads_each_rows_status():
    # As DVC 3 prints it: the status is the last word of each row, with no trailing space.
    status = """Task     Name        Created    Status
b3d52b1  privy-bawl  11:21 PM   Running
598fb78  baser-raps  11:21 PM   Queued
b32317d  zippy-soja  11:21 PM   Success
c5d7c23  short-leas  11:21 PM   Failed

Worker status: 1 active, 0 idle
"""
    assert queue_tasks(status) == {"privy-bawl": "Running", "baser-raps": "Queued", "zippy-soja": "Success",
                                   "short-leas": "Failed"}
    assert queue_tasks("Task     Name        Created    Status\n\nWorker status: 0 active, 0 idle\n") == {}


def test_label_curve_command_queues_runs_and_draws(tmp_path):
    repo = make_project(tmp_path)
    (repo / "bench").mkdir()
    shutil.copy(REPO / "bench" / "label_curve.py", repo / "bench")
    commit(repo, "curve script")
    out = run(repo, "python", "bench/label_curve.py", "--fracs", "0.5", "1.0", "--methods", "skip", "fixmatch",
              "--set", "train.epochs=1", "--model", "lenet")
    assert "queued 3 experiments" in out  # fixmatch at 1.0 is not run: nothing is unlabeled

    with open(repo / "reports" / "label_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["labeled_frac"] for r in rows] == ["0.5", "1.0"]
    assert all(0 <= float(r[m]) <= 1 for r in rows for m in ("skip", "fixmatch"))
    assert rows[1]["fixmatch"] == rows[1]["skip"]
    image = matplotlib.image.imread(repo / "reports" / "label_curve.png")
    assert image.shape[0] > 100 and image.shape[1] > 100

    # The same points as a DVC plot.
    run(repo, "dvc", "plots", "show", "-o", "plots", "reports/label_curve.csv")
    html = (repo / "plots" / "index.html").read_text()
    assert "label efficiency" in html and rows[0]["skip"] in html
