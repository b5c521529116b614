"""End to end: the whole pipeline (train, evaluate, report included) under DVC, on a tiny fake dataset.

One test walks through what a user does: `dvc repro` from scratch, a no-op `dvc repro`, a
`dvc exp run -S labeled_frac=0.1` that reruns only what depends on labeled_frac, then
`dvc metrics diff`, `dvc exp show` and `dvc plots show` on the results.
"""
import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

import fakes
from dvcrepo import commit, copy_pipeline, init, run, stages_run, stages_skipped

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
        "data.sources.fashion_mnist": [f"file://{mirror}"], "data.digests.fashion_mnist": fakes.digests_for(mirror),
        "train.epochs": 2, "train.batch_size": 32, "train.device": "cpu"})
    init(repo)
    # DVCLive cannot start in a git repo without commits ("Empty git repo"), so commit the code
    # first, as every clone of the project has.
    commit(repo, "pipeline on fake data")
    return repo


def metrics(repo: Path, model: str) -> dict:
    return json.loads((repo / "metrics" / f"{model}.json").read_text())


def check_results(repo: Path, labeled_frac: float) -> None:
    """Per-model metrics are sane and consistent with the split; the summary has one row per model."""
    import numpy as np

    n_train = len(np.load(repo / "data/split/train.npy"))
    n_labeled = len(np.load(repo / "data/index/labeled.npy"))
    assert 0 < n_train < N_TRAIN
    for model in MODELS:
        m = metrics(repo, model)
        assert m["model"] == model and m["labeled_frac"] == labeled_frac
        assert 0 <= m["test"]["accuracy"] <= 1 and 0 <= m["test"]["macro_f1"] <= 1
        assert m["n_labeled"] + m["n_unlabeled"] == n_train and m["n_labeled"] == n_labeled
        assert m["epochs_run"] == 2 and m["device"] == "cpu"
        assert (repo / "models" / f"{model}.pt").is_file()
    summary = (repo / "reports/summary.md").read_text()
    assert f"labeled_frac={labeled_frac}" in summary
    for model in MODELS:
        assert len(re.findall(rf"^\| {model} \|", summary, flags=re.M)) == 1, summary


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
    assert stages_run(first) == DATA_STAGES + AFTER_INDEX
    check_results(repo, labeled_frac=1.0)
    assert metrics(repo, MODELS[0])["n_unlabeled"] == 0

    # 2. Nothing changed: nothing reruns.
    again = run(repo, "dvc", "repro")
    assert stages_run(again) == [] and "Data and pipelines are up to date" in again

    # 2b. Code is a dep too: editing the strong augmentation, which train and evaluate import only through the
    # engine, makes the train stages stale, and only stages downstream of them (dvc status lists each stage
    # whose own deps changed: the data stages are untouched).
    augment = repo / "fewlabels/augment.py"
    original = augment.read_text()
    augment.write_text(original.replace("degrees: float = 20.0", "degrees: float = 25.0"))
    status = json.loads(run(repo, "dvc", "status", "--json"))
    stale = [f"{stage}@{m}" for stage in ("train", "evaluate") for m in MODELS]
    assert status == {name: [{"changed deps": {"fewlabels/augment.py": "modified"}}] for name in stale}
    augment.write_text(original)
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status")

    # 3. An experiment on labeled_frac reruns index and everything after it, and nothing before.
    commit(repo, "results at labeled_frac=1.0")
    baseline = {m: metrics(repo, m) for m in MODELS}
    exp = run(repo, "dvc", "exp", "run", "-S", "labeled_frac=0.1")
    assert sorted(stages_run(exp)) == sorted(AFTER_INDEX)
    assert stages_run(exp)[0] == "index" and stages_run(exp)[-1] == "report"
    assert sorted(stages_skipped(exp)) == sorted(DATA_STAGES)
    [exp_name] = re.findall(r"Ran experiment\(s\): (\S+)", exp)
    check_results(repo, labeled_frac=0.1)  # the experiment's results are applied to the workspace

    # 4. dvc metrics diff (HEAD vs workspace) shows the change in labels.
    diff = json.loads(run(repo, "dvc", "metrics", "diff", "HEAD", "--json"))
    for model in MODELS:
        n_labeled = diff[f"metrics/{model}.json"]["n_labeled"]
        assert n_labeled["old"] == baseline[model]["n_labeled"]
        assert n_labeled["new"] == metrics(repo, model)["n_labeled"] < n_labeled["old"]
        assert diff[f"metrics/{model}.json"]["labeled_frac"]["new"] == 0.1

    # 5. dvc exp show lists the experiment under the baseline commit with its param and metrics.
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    experiments = {exp["name"]: exp["revs"][0]["data"] for row in shown for exp in row.get("experiments") or []}
    assert exp_name in experiments
    data = experiments[exp_name]
    assert data["params"]["params.yaml"]["data"]["labeled_frac"] == 0.1
    assert data["metrics"]["metrics/lenet.json"]["data"]["n_labeled"] == metrics(repo, "lenet")["n_labeled"]

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
