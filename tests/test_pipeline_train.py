"""End to end: the whole pipeline (train, evaluate, report included) under DVC, on a tiny fake dataset.

One test walks through what a user does: `dvc repro` from scratch, a no-op `dvc repro`, a
`dvc exp run -S labeled_frac=0.1` that reruns only what depends on labeled_frac, then
`dvc metrics diff`, `dvc exp show` and `dvc plots show` on the results.
"""
import csv
import json
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest

import fakes
from fewlabels.metrics import SCORES
from dvcrepo import REPO, commit, copy_pipeline, init, run, stages_run, stages_skipped

pytestmark = pytest.mark.slow

MODELS = ["lenet", "cifar_tanh"]  # the two cheapest registry models that take 28x28 images
N_TRAIN, N_TEST = 300, 100
DATA_STAGES = ["download", "unpack", "split"]
AFTER_INDEX = ["index", *(f"train@{m}" for m in MODELS), *(f"evaluate@{m}" for m in MODELS), "report"]


# helpers -----------------------------------------------------------------------------------------

def make_project(tmp_path: Path) -> Path:
    """A fresh git + DVC repo with a copy of the pipeline, configured for a small fast run on fake data."""
    mirror = tmp_path / "mirror"
    fakes.make_idx_dataset(mirror, n_train=N_TRAIN, n_test=N_TEST)
    repo = copy_pipeline(tmp_path / "repo", {
        "dataset": "fashion_mnist", "labeled_frac": 1.0, "models": MODELS,
        "data.sources.fashion_mnist": [f"file://{mirror}"],
        "train.epochs": 2, "train.batch_size": 32, "train.device": "cpu"})
    fakes.pin_digests(repo, "fashion_mnist", mirror)
    init(repo)
    # DVCLive cannot start in a git repo without commits ("Empty git repo"), so commit the code
    # first, as every clone of the project has.
    commit(repo, "pipeline on fake data")
    return repo


def metrics(repo: Path, model: str) -> dict:
    """The model's scores: metrics/<model>.json holds them under the model's name."""
    scores = json.loads((repo / "metrics" / f"{model}.json").read_text())
    assert list(scores) == [model]
    return scores[model]


def check_results(repo: Path, labeled_frac: float) -> None:
    """Metrics hold scores only; runs/ holds what the run was; the summary has one row per model."""
    import numpy as np

    n_train = len(np.load(repo / "data/split/train.npy"))
    n_labeled = len(np.load(repo / "data/index/labeled.npy"))
    n_valid = len(np.load(repo / "data/index/valid.npy"))  # the validation labels the run may use
    assert 0 < n_train < N_TRAIN
    for model in MODELS:
        m = metrics(repo, model)
        assert m.keys() == {"test", "valid"} and all(m[s].keys() == set(SCORES) for s in m)
        assert all(0 <= m[s]["accuracy"] <= 1 and 0 <= m[s]["macro_f1"] <= 1 for s in m)
        run_record = json.loads((repo / "runs" / f"{model}.json").read_text())
        assert run_record["n_labeled"] + run_record["n_unlabeled"] == n_train and run_record["n_labeled"] == n_labeled
        assert run_record["epochs_run"] == 2 and run_record["device"] == "cpu"
        used = run_record["labels_used"]  # every label the run could read, validation included, within the budget
        assert (used["train"], used["valid"], used["of"]) == (n_labeled, n_valid, N_TRAIN)
        assert used["total"] <= labeled_frac * N_TRAIN + 20  # rounding and the floor of one per class: <= 1 per class and split
        assert sum(c["train"] + c["valid"] for c in used["per_class"].values()) == used["total"]
    summary = (repo / "reports/summary.md").read_text()
    assert f"labeled_frac={labeled_frac}" in summary
    assert f"labels used: {n_labeled + n_valid:,} of {N_TRAIN:,} " in summary
    for model in MODELS:
        [row] = re.findall(rf"^\| {model} \|.*$", summary, flags=re.M)
        assert f"| {metrics(repo, model)['test']['accuracy']:.4f} |" in row


def readme_exp_show_command() -> list[str]:
    """The README's `dvc exp show ...` command for comparing scenarios at a glance, as argv."""
    [line] = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("dvc exp show --")]
    return shlex.split(line.split("  #")[0])


def embedded_plots(html: str) -> dict[str, dict]:
    """{div id: Vega-Lite spec} for every plot `dvc plots show` rendered into index.html."""
    decoder, plots = json.JSONDecoder(), {}
    for match in re.finditer(r'<div id\s*=\s*"([^"]+)">\s*<script[^>]*>\s*var spec\s*=\s*', html):
        plots[match.group(1)], _ = decoder.raw_decode(html, match.end())
    return plots


def plot_id(path: str) -> str:
    return re.sub(r"[/.]", "_", path)


def read_rows(path: Path, delimiter: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


# the test ----------------------------------------------------------------------------------------

def test_train_evaluate_report_under_dvc(tmp_path):
    repo = make_project(tmp_path)

    # 1. From scratch every stage runs, data stages first.
    first = run(repo, "dvc", "repro")
    assert stages_run(first) == ["check", *DATA_STAGES, *AFTER_INDEX]
    check_results(repo, labeled_frac=1.0)
    assert json.loads((repo / "runs" / f"{MODELS[0]}.json").read_text())["n_unlabeled"] == 0

    # 2. Nothing changed: nothing reruns.
    again = run(repo, "dvc", "repro")
    assert stages_run(again) == [] and "Data and pipelines are up to date" in again

    # 2b. Code is a dep too: editing the strong augmentation, which the train stage imports only through the
    # engine, makes the train stages stale, and no other (dvc status lists each stage whose own deps changed):
    # evaluate imports inference, not the engine, so it reruns only if the retrained model differs.
    augment = repo / "fewlabels/augment.py"
    original = augment.read_text()
    augment.write_text(original.replace("degrees: float = 20.0", "degrees: float = 25.0"))
    status = json.loads(run(repo, "dvc", "status", "--json"))
    stale = [f"train@{m}" for m in MODELS]
    assert status == {name: [{"changed deps": {"fewlabels/augment.py": "modified"}}] for name in stale}
    augment.write_text(original)
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status")
    # At the grain users change: a method the run does not use (ssl.method is skip) is no dep of any stage;
    # editing one model's file makes its own train and evaluate stale, no other model's and no data stage.
    for path, edit, stale in (("fewlabels/methods/fixmatch.py", "# a comment\n", []),
                              (f"fewlabels/models/{MODELS[0]}.py", "# a comment\n",
                               [f"train@{MODELS[0]}", f"evaluate@{MODELS[0]}"])):
        original = (repo / path).read_text()
        (repo / path).write_text(original + edit)
        status = json.loads(run(repo, "dvc", "status", "--json"))
        assert status == {name: [{"changed deps": {path: "modified"}}] for name in stale}, (path, status)
        (repo / path).write_text(original)

    # 2c. The same params give the same weights, byte for byte, on the CPU: a forced retrain leaves evaluate
    # skipped (its model dep is unchanged), reruns only the report (which shows the training seconds), and
    # `dvc metrics diff` has nothing to show.
    commit(repo, "results at labeled_frac=1.0")
    weights = (repo / f"models/{MODELS[0]}.pt").read_bytes()
    forced = run(repo, "dvc", "repro", "-f", "-s", f"train@{MODELS[0]}")
    assert stages_run(forced) == [f"train@{MODELS[0]}"]
    assert (repo / f"models/{MODELS[0]}.pt").read_bytes() == weights
    assert stages_run(run(repo, "dvc", "repro")) == ["report"]
    assert json.loads(run(repo, "dvc", "metrics", "diff", "--json")) == {}
    commit(repo, "same results")

    # 3. An experiment on labeled_frac reruns index and everything after it, and nothing before.
    baseline = {m: metrics(repo, m) for m in MODELS}
    exp = run(repo, "dvc", "exp", "run", "-S", "labeled_frac=0.1")
    assert sorted(stages_run(exp)) == sorted(["check", *AFTER_INDEX])  # check: every params.yaml edit
    assert stages_run(exp)[:2] == ["check", "index"] and stages_run(exp)[-1] == "report"
    assert sorted(stages_skipped(exp)) == sorted(DATA_STAGES)
    [exp_name] = re.findall(r"Ran experiment\(s\): (\S+)", exp)
    check_results(repo, labeled_frac=0.1)  # the experiment's results are applied to the workspace

    # 4. dvc metrics diff (HEAD vs workspace) shows score changes, and only scores.
    diff = json.loads(run(repo, "dvc", "metrics", "diff", "HEAD", "--json"))
    assert set(diff) <= {f"metrics/{m}.json" for m in MODELS} and diff
    for path, changes in diff.items():
        model = path.removeprefix("metrics/").removesuffix(".json")
        assert changes and set(changes) <= {f"{model}.{s}.{k}" for s in ("test", "valid") for k in SCORES}
        for key, change in changes.items():
            _, split, score = key.split(".")
            assert (change["old"], change["new"]) == (baseline[model][split][score], metrics(repo, model)[split][score])

    # 5. dvc exp show: the experiment under the baseline commit, with its params and each model's scores.
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    experiments = {exp["name"]: exp["revs"][0]["data"] for row in shown for exp in row.get("experiments") or []}
    data = experiments[exp_name]
    assert data["params"]["params.yaml"]["data"]["labeled_frac"] == 0.1
    assert set(data["metrics"]) == {f"metrics/{m}.json" for m in MODELS}
    for model in MODELS:
        assert data["metrics"][f"metrics/{model}.json"]["data"] == {model: metrics(repo, model)}
    # The README's command for reading it at a glance fits 120 columns and shows every model's test accuracy.
    table = run(repo, *readme_exp_show_command(), env={"COLUMNS": "120"})
    assert max(map(len, table.splitlines())) <= 120, table
    for model in MODELS:
        assert f" {metrics(repo, model)['test']['accuracy']:.5g} " in table, table  # DVC's default precision

    # 6. dvc plots show renders the DVCLive curves and the confusion data, values and all.
    out = tmp_path / "plots"
    run(repo, "dvc", "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text()
    plots = embedded_plots(html)
    for model in MODELS:
        for curve in ("train/loss", "valid/loss", "valid/acc", "lr"):
            tsv = f"dvclive/{model}/plots/metrics/{curve}.tsv"
            rows = read_rows(repo / tsv, "\t")
            assert [r["step"] for r in rows] == ["0", "1"]  # one row per epoch, 2 epochs
            shown_rows = [{k: v for k, v in r.items() if k != "rev"} for r in plots[plot_id(tsv)]["data"]["values"]]
            assert shown_rows == rows
        confusion = f"eval/{model}/confusion.csv"
        expected = Counter((r["actual"], r["predicted"]) for r in read_rows(repo / confusion, ","))
        assert sum(expected.values()) == N_TEST
        shown_pairs = Counter((v["actual"], v["predicted"]) for v in plots[plot_id(confusion)]["data"]["values"])
        assert shown_pairs == expected
        assert f"eval/{model}/confusion.png" in html
