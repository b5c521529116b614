"""The label-efficiency curve: reading `dvc exp show --json`, and the one-command sweep end to end."""
import csv
import json
import shutil

import matplotlib.image
import pytest

from fewlabels import params
from bench.curve import curve_rows, markdown_table, merge, queue_tasks, recipe, summarize
from dvcrepo import REPO, commit, run
from test_pipeline_train import make_project


def record(frac, method, acc, timestamp, model="cnn", seed=0, rev=None, epochs=params.TrainConfig().epochs):
    """One commit/experiment record shaped like DVC 3's `dvc exp show --json`."""
    settings = {"labeled_frac": frac, "seed": seed, "ssl": {"method": method}, "train": {"epochs": epochs}}
    return {"rev": rev or f"sha-{timestamp}", "data": {
        "timestamp": timestamp,
        "params": {"params.yaml": {"data": settings}},
        "metrics": {f"metrics/{model}.json": {"data": {model: {"test": {"accuracy": acc}}}}} if acc is not None else {},
    }}


def exp_show(*experiments, baseline=record(1.0, "skip", 0.92, "2026-01-01T00:00:00")):
    """Workspace + one baseline commit whose experiments nest under experiments[].revs[], as DVC writes them."""
    return [record(1.0, "skip", 0.92, None) | {"rev": "workspace"},
            baseline | {"experiments": [{"revs": [e]} for e in experiments]}]


def test_curve_rows_one_per_run_newest_wins_sorted():
    show = exp_show(
        record(0.1, "skip", 0.85, "2026-01-02T00:00:00"),
        record(0.1, "skip", 0.87, "2026-01-03T00:00:00"),      # rerun of the same cell and seed: newer wins
        record(0.1, "skip", 0.80, "2026-01-03T00:00:01", seed=1),  # another seed: its own row
        record(0.1, "fixmatch", 0.90, "2026-01-02T00:00:00"),
        record(0.1, "skip", 0.83, "2026-01-02T00:00:01", epochs=40),  # another recipe: its own row
        record(0.05, "fixmatch", None, "2026-01-04T00:00:00"),  # failed: no metrics, no row
    )
    rows = curve_rows(show, "cnn")
    assert [(r["method"], r["recipe"], r["labeled_frac"], r["seed"], r["test_acc"]) for r in rows] == [
        ("fixmatch", "", 0.1, 0, 0.90), ("skip", "", 0.1, 0, 0.87), ("skip", "", 0.1, 1, 0.80),
        ("skip", "", 1.0, 0, 0.92), ("skip", "train.epochs=40", 0.1, 0, 0.83)]
    assert rows[1]["rev"] == "sha-2026-01-03T00:00:00" and rows[1]["model"] == "cnn"
    assert rows[1]["epochs"] == params.TrainConfig().epochs


def test_a_recipe_is_what_a_run_sets_beyond_the_defaults_and_the_grid_as_dvc_exp_run_takes_it():
    settings = params.Params().model_dump(mode="json")
    assert recipe(settings) == ""
    settings.update(labeled_frac=0.01, seed=2, models=["lenet"])  # the grid's axes, and which models ran
    settings["ssl"].update(method="fixmatch", unlabeled_ratio=1, dist_align=True)
    settings["train"].update(augment="flip_crop", epoch_steps=700, step_milestones=[1, 2])
    settings["data"]["timeout_s"] = 5.0  # where files come from, not how a model learns
    assert recipe(settings) == ("ssl.dist_align=true ssl.unlabeled_ratio=1 train.augment=flip_crop "
                                "train.epoch_steps=700 train.step_milestones=[1, 2]")
    settings["train"]["retired_setting"] = 1  # an older params.yaml's key that has no default now
    assert "train.retired_setting=1" in recipe(settings).split(" ")


def test_the_workspace_is_not_a_run_of_its_own():
    rows = curve_rows([record(0.3, "skip", 0.5, None) | {"rev": "workspace"}], "cnn")
    assert rows == []


def test_a_failed_or_running_experiment_is_not_a_run_though_it_shows_its_baselines_metrics():
    failed = record(0.1, "skip", 0.92, "2026-01-02T00:00:00") | {"error": {"msg": "Experiment run failed", "type": ""}}
    assert [r["labeled_frac"] for r in curve_rows(exp_show(failed), "cnn")] == [1.0]  # the baseline only
    running = record(0.1, "skip", 0.92, None, rev="c0ffee")  # DVC shows it as its temporary workspace
    running["data"]["rev"] = "workspace"
    assert [r["labeled_frac"] for r in curve_rows(exp_show(running), "cnn")] == [1.0]


def test_curve_rows_of_another_model_are_absent():
    assert curve_rows(exp_show(record(0.1, "skip", 0.85, "t")), "bn_cnn") == []


def test_summary_is_mean_and_sample_std_over_seeds_never_mixing_protocols():
    def row(method, recipe, acc, protocol="v2"):
        return {"method": method, "recipe": recipe, "labeled_frac": 0.1, "test_acc": acc, "protocol": protocol}

    rows = [row("skip", "", a) for a in (0.80, 0.82, 0.84)]
    rows += [row("fixmatch", "", 0.9), row("skip", "train.epochs=4", 0.7), row("skip", "", 0.95, "v1")]
    summary = summarize(rows)
    assert [(s["method"], s["recipe"], s["protocol"], s["n"]) for s in summary] == [
        ("fixmatch", "", "v2", 1), ("skip", "", "v1", 1), ("skip", "", "v2", 3), ("skip", "train.epochs=4", "v2", 1)]
    assert summary[2]["mean"] == pytest.approx(0.82) and summary[2]["std"] == pytest.approx(0.02)
    assert summary[0]["std"] == 0.0
    table = markdown_table(summary).splitlines()
    assert table[0] == "| ssl.method (recipe) | labeled_frac 0.1 |"
    assert table[2:] == ["| fixmatch | 0.9000 ± 0.0000 (1) |", "| skip | 0.8200 ± 0.0200 (3) |",
                         "| skip (train.epochs=4) | 0.7000 ± 0.0000 (1) |", "| skip [v1] | 0.9500 ± 0.0000 (1) |"]


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


def test_grid_is_fracs_by_methods_by_seeds_without_ssl_at_full_labels(monkeypatch):
    from bench import label_curve

    cells = label_curve.grid([0.1, 1.0], ["skip", "fixmatch"], [0, 1])
    assert cells == [(0.1, "skip", 0), (0.1, "skip", 1), (0.1, "fixmatch", 0), (0.1, "fixmatch", 1),
                     (1.0, "skip", 0), (1.0, "skip", 1)]
    shards = [label_curve.grid([0.1, 1.0], ["skip", "fixmatch"], [0, 1], (i, 3)) for i in range(3)]
    assert sorted(c for shard in shards for c in shard) == sorted(cells) and all(len(s) == 2 for s in shards)
    queued = []
    monkeypatch.setattr(label_curve, "dvc", lambda *args: queued.append(args[3:]))
    assert label_curve.queue_grid(cells[:1], ["train.epochs=3"]) == 1
    assert queued == [("-S", "labeled_frac=0.1", "-S", "ssl.method=skip", "-S", "seed=0", "-S", "train.epochs=3")]


def test_run_records_fill_each_row_and_a_run_without_one_is_left_out_with_a_line(monkeypatch, capsys):
    import json

    from dvc.exceptions import PathMissingError

    from bench import label_curve

    records = {"a": {"device": "cpu", "train_seconds": 312.04,
                     "pseudo_labels": [{"acc": 0.8}, {"acc": 0.83456}]},
               "b": {"device": "cuda:0", "train_seconds": 20.0, "pseudo_labels": []},
               "d": {"device": "cpu", "train_seconds": 9.0, "pseudo_labels": [{"acc": None}]}}

    def read(path, rev):
        if rev not in records:
            raise PathMissingError(path, None)
        return json.dumps(records[rev])

    monkeypatch.setattr(label_curve, "read_output", read)
    rows = [{"labeled_frac": 0.01, "method": m, "seed": 0, "model": "bn_cnn", "rev": rev}
            for m, rev in (("label_propagation", "a"), ("skip", "b"), ("skip", "c0ffee0012"), ("fixmatch", "d"))]
    assert label_curve.with_run_records(rows) == [
        dict(rows[0], device="cpu", train_seconds=312.0, pseudo_label_acc=0.8346),
        dict(rows[1], device="cuda:0", train_seconds=20.0, pseudo_label_acc=""),
        dict(rows[3], device="cpu", train_seconds=9.0, pseudo_label_acc=""),  # its last round labelled none
    ]
    assert capsys.readouterr().err == ("left out c0ffee00 (labeled_frac 0.01, skip, seed 0): its runs/bn_cnn.json "
                                       "is in no cache here; `dvc pull` it\n")


@pytest.mark.parametrize("text", ["2/2", "a/2", "1", "-1/2"])
def test_a_bad_shard_is_refused(text):
    import argparse

    from bench import label_curve

    with pytest.raises(argparse.ArgumentTypeError, match="expected I/N"):
        label_curve.shard_arg(text)


def copy_curve_script(repo):
    """bench/label_curve.py and the bench modules it imports, into the scratch repository `repo`."""
    (repo / "bench").mkdir()
    for name in ("__init__.py", "curve.py", "label_curve.py"):
        shutil.copy(REPO / "bench" / name, repo / "bench")


@pytest.mark.slow
def test_two_hosts_share_the_grid_through_git_and_dvc_remotes(tmp_path):
    """Two clones stand in for two hosts: a bare repository is the shared Git remote, a directory the DVC
    remote. Each runs its shard and pushes; the curve drawn in the second holds the first one's runs too."""
    first = make_project(tmp_path)
    copy_curve_script(first)
    run(first, "dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-store"))
    commit(first, "curve script and DVC remote")
    run(tmp_path, "git", "init", "-q", "--bare", "shared.git")
    run(first, "git", "remote", "add", "origin", str(tmp_path / "shared.git"))
    run(first, "git", "push", "-q", "origin", "HEAD:main")
    run(tmp_path, "git", "clone", "-q", "-b", "main", str(tmp_path / "shared.git"), "second")
    second = tmp_path / "second"
    for key, value in (("user.name", "test"), ("user.email", "test@example.com")):
        run(second, "git", "config", key, value)
    grid = ["--fracs", "0.5", "1.0", "--methods", "skip", "--seeds", "0", "--set", "train.epochs=1",
            "--set", "models=[lenet]", "--model", "lenet", "--git-remote", "origin"]
    assert "queued 1 experiments" in run(first, "python", "bench/label_curve.py", *grid, "--shard", "0/2")
    assert "queued 1 experiments" in run(second, "python", "bench/label_curve.py", *grid, "--shard", "1/2")
    with open(second / "reports" / "label_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["labeled_frac"]) for r in rows] == [("skip", "0.5"), ("skip", "1.0")]
    assert all(r["device"] == "cpu" and float(r["train_seconds"]) >= 0 for r in rows)  # read from the DVC remote


@pytest.mark.slow
def test_label_curve_command_queues_runs_and_draws(tmp_path):
    repo = make_project(tmp_path)
    copy_curve_script(repo)
    commit(repo, "curve script")
    out = run(repo, "python", "bench/label_curve.py", "--fracs", "0.5", "1.0", "--methods", "skip", "fixmatch",
              "--seeds", "3", "--set", "train.epochs=1", "--set", "models=[lenet]", "--model", "lenet")
    assert "queued 3 experiments" in out  # fixmatch at 1.0 is not run: nothing is unlabeled

    with open(repo / "reports" / "label_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["labeled_frac"], r["seed"]) for r in rows] == [
        ("fixmatch", "0.5", "3"), ("skip", "0.5", "3"), ("skip", "1.0", "3")]
    assert all(0 <= float(r["test_acc"]) <= 1 and r["device"] == "cpu" and float(r["train_seconds"]) >= 0
               and r["epochs"] == "1" for r in rows)
    # make_project's own settings and the --set, beyond the grid's axes, models and data sources
    assert {r["recipe"] for r in rows} == {"train.batch_size=32 train.device=cpu train.epochs=1"}
    assert {r["protocol"] for r in rows} == {"v2"}  # their runs recorded the labels they used
    assert "| labeled_frac 0.5 | labeled_frac 1.0 |" in out and " (1) |" in out  # the table of means
    image = matplotlib.image.imread(repo / "reports" / "label_curve.png")
    assert image.shape[0] > 100 and image.shape[1] > 100

    # The same runs as a DVC plot through the custom template: log x axis, titled axes, a line per method.
    out = run(repo, "dvc", "plots", "show", "--json")
    # (after DVC's note that the experiments' models=[lenet] left cifar_tanh's plots out of the workspace)
    [plot] = json.loads(out[out.index("{"):])["data"]["reports/label_curve.csv"]
    spec = plot["content"]
    assert spec["encoding"]["x"]["scale"] == {"type": "log"}
    assert spec["encoding"]["x"]["title"] == "labeled fraction of the training split (log scale)"
    assert {layer["encoding"]["y"]["title"] for layer in spec["layer"]} == {"test accuracy (mean ± std over seeds)"}
    assert spec["encoding"]["color"]["field"] == "variant"  # method and recipe
    assert [(v["method"], v["labeled_frac"], v["seed"]) for v in spec["data"]["values"]] == \
        [(r["method"], r["labeled_frac"], r["seed"]) for r in rows]


@pytest.mark.slow
def test_label_curve_refuses_uncommitted_params(tmp_path):
    """Every queued cell would inherit a leftover edit (e.g. the last `dvc exp run -S`'s params) unseen."""
    repo = make_project(tmp_path)
    copy_curve_script(repo)
    commit(repo, "curve script")
    params = repo / "params.yaml"
    text = params.read_text()
    assert "weight_decay: 0.0" in text
    params.write_text(text.replace("weight_decay: 0.0", "weight_decay: 1.0e-05"))
    out = run(repo, "python", "bench/label_curve.py", "--fracs", "0.5", "--methods", "skip", ok=False)
    assert out.strip().splitlines()[-1].startswith("error: uncommitted changes in params.yaml,")
    assert "No experiment tasks" in run(repo, "dvc", "queue", "status")


def test_the_csv_accumulates_and_a_new_run_replaces_its_cell():
    kept = [{"labeled_frac": "0.01", "method": "skip", "recipe": "", "seed": "0", "test_acc": "0.81", "model": "bn_cnn",
             "epochs": "10", "device": "cpu", "train_seconds": "300.0", "rev": "aaa"},
            {"labeled_frac": "0.05", "method": "skip", "recipe": "", "seed": "0", "test_acc": "0.86", "model": "bn_cnn",
             "epochs": "10", "device": "cpu", "train_seconds": "320.0", "rev": "bbb"}]
    new = [{"labeled_frac": 0.01, "method": "skip", "recipe": "", "seed": 0, "test_acc": 0.83, "model": "bn_cnn",
            "epochs": 10, "device": "cpu", "train_seconds": 310.0, "rev": "ccc"},
           {"labeled_frac": 0.01, "method": "skip", "recipe": "train.epochs=4", "seed": 0, "test_acc": 0.8,
            "model": "bn_cnn", "epochs": 4, "device": "cpu", "train_seconds": 250.0, "rev": "eee"},
           {"labeled_frac": 0.01, "method": "fixmatch", "recipe": "", "seed": 0, "test_acc": 0.84, "model": "bn_cnn",
            "epochs": 2, "device": "cpu", "train_seconds": 590.0, "rev": "ddd"}]
    rows = merge(kept, new)
    assert [(r["method"], r["labeled_frac"], r["rev"]) for r in rows] == [
        ("fixmatch", 0.01, "ddd"), ("skip", 0.01, "ccc"), ("skip", 0.05, "bbb"), ("skip", 0.01, "eee")]
    assert rows[2]["test_acc"] == 0.86 and rows[2]["seed"] == 0
    # a run under the new label protocol sits beside the old protocol's run of the same cell, not over it
    both = merge(kept, [dict(new[0], protocol="v2")])
    assert [(r["labeled_frac"], r["rev"], r["protocol"]) for r in both] == [
        (0.01, "aaa", "v1"), (0.05, "bbb", "v1"), (0.01, "ccc", "v2")]


def test_the_same_run_seen_from_a_later_commit_keeps_its_rev():
    kept = [{"labeled_frac": "1.0", "method": "skip", "recipe": "", "seed": "0", "test_acc": "0.9223", "model": "bn_cnn",
             "epochs": "4", "device": "cpu", "train_seconds": "64.9", "pseudo_label_acc": "", "rev": "aaa",
             "protocol": "v2"}]
    again = dict(labeled_frac=1.0, method="skip", recipe="", seed=0, test_acc=0.9223, model="bn_cnn", epochs=4,
                 device="cpu", train_seconds=64.9, pseudo_label_acc=None, rev="bbb", protocol="v2")
    assert [r["rev"] for r in merge(kept, [again])] == ["aaa"]
    assert [r["rev"] for r in merge(kept, [dict(again, test_acc=0.9224)])] == ["bbb"]  # a new result wins
