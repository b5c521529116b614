"""The label-efficiency curve: test accuracy vs labeled fraction, one line per ssl.method, mean ± std over seeds.

Reads the JSON of `dvc exp show --json` and the text of `dvc queue status`; plain functions, no I/O.
"""
import json
import statistics

import matplotlib

matplotlib.use("Agg")  # batch jobs and containers have no display
import matplotlib.pyplot as plt  # noqa: E402

from fewlabels.params import Params  # noqa: E402

# reports/label_curve.csv: one row per run (long form), in this column order
# (recipe: what else the run set, see recipe(); pseudo_label_acc: of the pseudo-labels of the run's last epoch
# against the hidden labels, fewlabels.metrics.pseudo_label_scores' acc; empty for skip; protocol: v2 when the
# run's validation kept labeled_frac of its labels too (fewlabels.splits), v1 when it selected with all 6,000)
FIELDS = ["labeled_frac", "method", "recipe", "seed", "test_acc", "model", "epochs", "device", "train_seconds",
          "pseudo_label_acc", "rev", "protocol"]
PROTOCOLS = {"v1": "validation kept every label", "v2": "validation kept labeled_frac of its labels"}
AXES = {"labeled_frac", "seed", "ssl.method"}  # the grid's own columns
NOT_RECIPE = ("models", "data.")  # which models a run trains and where its files come from: not how a model learns


def _flat(params: dict, prefix: str = ""):
    for key, value in params.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


DEFAULTS = dict(_flat(Params().model_dump(mode="json")))  # every setting's default, keyed as recipe() writes it


def recipe(params: dict) -> str:
    """The settings of a run's params.yaml that differ from fewlabels.params' defaults, beyond the grid's
    axes, as `dvc exp run -S` takes them: 'ssl.unlabeled_ratio=1 train.epochs=4'; '' for the defaults."""
    return " ".join(f"{key}={value if isinstance(value, str) else json.dumps(value)}"
                    for key, value in sorted(_flat(params))
                    if key not in AXES and not key.startswith(NOT_RECIPE)
                    and (key not in DEFAULTS or value != DEFAULTS[key]))


def variant(row: dict) -> str:
    """A row's method and recipe, as legends and tables name a line: 'skip' or 'skip (train.epochs=4)'; a row
    of the old protocol says so: 'skip [v1]'."""
    return row["method"] + (f" ({row['recipe']})" if row["recipe"] else "") + (" [v1]" if row["protocol"] == "v1" else "")


def _records(node):
    """(rev, data) of every commit and experiment in `dvc exp show --json`: dicts whose 'data' has params."""
    if isinstance(node, dict):
        data = node.get("data")
        # the workspace is a copy of a run, not a run of its own; a failed (or killed) experiment, and one still
        # running (its data is its temporary workspace's), show the metrics committed in their baseline
        if (isinstance(data, dict) and "params" in data and "workspace" not in (node.get("rev"), data.get("rev"))
                and not node.get("error")):
            yield node.get("rev"), data
        for value in node.values():
            yield from _records(value)
    elif isinstance(node, list):
        for value in node:
            yield from _records(value)


def curve_rows(exp_show: list, model: str) -> list[dict]:
    """One row per (labeled_frac, ssl.method, recipe, seed) with metrics/<model>.json, the newest run
    winning; sorted.

    Rows hold the FIELDS that `dvc exp show` knows; device and train_seconds come from each run's
    runs/<model>.json, which the caller reads.
    """
    newest = {}
    for rev, data in sorted(_records(exp_show), key=lambda r: r[1].get("timestamp") or ""):
        params = data["params"].get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics", {}).get(f"metrics/{model}.json", {}).get("data")
        if not metrics or "labeled_frac" not in params:
            continue
        frac, method, seed = float(params["labeled_frac"]), params["ssl"]["method"], params["seed"]
        how = recipe(params)
        newest[(frac, method, how, seed)] = {"labeled_frac": frac, "method": method, "recipe": how, "seed": seed,
                                             "test_acc": metrics[model]["test"]["accuracy"], "model": model,
                                             "epochs": params["train"]["epochs"], "rev": rev}
    return [newest[key] for key in sorted(newest, key=lambda k: (k[1], k[2], k[0], k[3]))]


def protocol(run_record: dict) -> str:
    """The label protocol of a run, from its runs/<model>.json: only v2 runs record the labels they used."""
    return "v2" if "labels_used" in run_record else "v1"


def run_key(row: dict) -> tuple:
    """What tells one run's row of reports/label_curve.csv from another's (text or numbers alike)."""
    return float(row["labeled_frac"]), row["method"], row["recipe"], int(row["seed"]), row["model"], row["protocol"]


def merge(kept: list[dict], new: list[dict]) -> list[dict]:
    """The rows already in reports/label_curve.csv (earlier sessions, other hosts: read back as text) and
    this run's: a new row replaces a kept one of the same labeled_frac, method, recipe, seed, model and
    protocol (a kept row from before the protocol column is v1), unless only its rev differs: the same run seen
    again from a later commit (a commit's own metrics, shown by `dvc exp show` at every commit) keeps the rev
    that made it, so the csv changes only when a result does. Sorted by method, recipe, labeled_frac, seed;
    numbers as numbers."""
    rows = {}
    for row in [*kept, *new]:
        row = dict(row, labeled_frac=float(row["labeled_frac"]), seed=int(row["seed"]),
                   test_acc=float(row["test_acc"]), train_seconds=float(row["train_seconds"]),
                   protocol=row.get("protocol") or "v1")
        key = run_key(row)
        if key not in rows or _as_text(rows[key], "rev") != _as_text(row, "rev"):
            rows[key] = row
    return [rows[k] for k in sorted(rows, key=lambda k: (k[5], k[1], k[2], k[0], k[3], k[4]))]


def _as_text(row: dict, leave_out: str) -> dict:
    """A row's fields but one, as the csv writes them (a kept row is read back as text, a new one has numbers)."""
    return {key: "" if value is None else str(value) for key, value in row.items() if key != leave_out}


def summarize(rows: list[dict]) -> list[dict]:
    """Per (method, recipe, protocol, labeled_frac): mean and sample standard deviation of test accuracy over
    seeds, and n."""
    cells = {}
    for row in rows:
        cells.setdefault((row["method"], row["recipe"], row["protocol"], row["labeled_frac"]), []).append(row["test_acc"])
    return [{"method": method, "recipe": how, "protocol": proto, "labeled_frac": frac, "mean": statistics.fmean(accs),
             "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "n": len(accs)}
            for (method, how, proto, frac), accs in sorted(cells.items())]


def row(cells: list) -> str:
    """One markdown table row."""
    return "| " + " | ".join(map(str, cells)) + " |"


def table(head: list[str], rows: list[list]) -> str:
    """A markdown table: the head, its rule, the rows."""
    return "\n".join([row(head), row(["---"] * len(head)), *map(row, rows)]) + "\n"


def markdown_table(summary: list[dict]) -> str:
    """Variant (method and recipe) rows x labeled_frac columns of 'mean ± std (n)': the variants outnumber the
    fractions, and a row reads as one recipe's curve."""
    methods = sorted({variant(s) for s in summary})
    fracs = sorted({s["labeled_frac"] for s in summary})
    cell = {(variant(s), s["labeled_frac"]): f"{s['mean']:.4f} ± {s['std']:.4f} ({s['n']})" for s in summary}
    return table(["ssl.method (recipe)", *(f"labeled_frac {f}" for f in fracs)],
                 [[m, *(cell.get((m, f), "") for f in fracs)] for m in methods])


def plot_curve(summary: list[dict], model: str, title: str):
    """A matplotlib figure: test accuracy vs labeled fraction (log x), a line per method and recipe, ± std
    error bars."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for method in sorted({variant(s) for s in summary}):
        points = [s for s in summary if variant(s) == method]
        ax.errorbar([s["labeled_frac"] for s in points], [s["mean"] for s in points],
                    yerr=[s["std"] for s in points], marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("labeled fraction of the training split (log scale)")
    ax.set_ylabel(f"test accuracy ({model}), mean ± std over seeds")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="ssl.method (recipe)", fontsize="x-small")
    fig.tight_layout()
    return fig


def queue_tasks(status: str) -> dict[str, str]:
    """`dvc queue status` output -> {experiment name: Queued | Running | Success | Failed | ...}.

    Task rows read `<task id>  <name>  <created>  <status>`; the header and the worker line are skipped.
    """
    tasks = {}
    for line in status.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] != "Task" and not line.startswith("Worker"):
            tasks[words[1]] = words[-1]
    return tasks
