"""The label-efficiency curve: test accuracy vs labeled fraction, one line per ssl.method, mean ± std over seeds.

Reads the JSON of `dvc exp show --json` and the text of `dvc queue status`; plain functions, no I/O.
"""
import statistics

import matplotlib

matplotlib.use("Agg")  # batch jobs and containers have no display
import matplotlib.pyplot as plt  # noqa: E402

# reports/label_curve.csv: one row per run (long form), in this column order
# (pseudo_label_acc: of the last relabelling of a method that labels every image, against the hidden labels;
# empty for the others)
FIELDS = ["labeled_frac", "method", "seed", "test_acc", "model", "epochs", "device", "train_seconds",
          "pseudo_label_acc", "rev"]


def _records(node):
    """(rev, data) of every commit and experiment in `dvc exp show --json`: dicts whose 'data' has params."""
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data and node.get("rev") != "workspace":
            yield node.get("rev"), data  # the workspace is a copy of a run, not a run of its own
        for value in node.values():
            yield from _records(value)
    elif isinstance(node, list):
        for value in node:
            yield from _records(value)


def curve_rows(exp_show: list, model: str) -> list[dict]:
    """One row per (labeled_frac, ssl.method, seed) with metrics/<model>.json, the newest run winning; sorted.

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
        newest[(frac, method, seed)] = {"labeled_frac": frac, "method": method, "seed": seed,
                                        "test_acc": metrics[model]["test"]["accuracy"], "model": model,
                                        "epochs": params["train"]["epochs"], "rev": rev}
    return [newest[key] for key in sorted(newest, key=lambda k: (k[1], k[0], k[2]))]


def _key(row: dict) -> tuple:
    return float(row["labeled_frac"]), row["method"], int(row["seed"]), row["model"]


def merge(kept: list[dict], new: list[dict]) -> list[dict]:
    """The rows already in reports/label_curve.csv (earlier sessions, other hosts: read back as text) and
    this run's: a new row replaces a kept one of the same labeled_frac, method, seed and model. Sorted by
    method, labeled_frac, seed; numbers as numbers."""
    rows = {}
    for row in [*kept, *new]:
        row = dict(row, labeled_frac=float(row["labeled_frac"]), seed=int(row["seed"]),
                   test_acc=float(row["test_acc"]), train_seconds=float(row["train_seconds"]))
        rows[_key(row)] = row
    return [rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0], k[2], k[3]))]


def summarize(rows: list[dict]) -> list[dict]:
    """Per (method, labeled_frac): mean and sample standard deviation of test accuracy over seeds, and n."""
    cells = {}
    for row in rows:
        cells.setdefault((row["method"], row["labeled_frac"]), []).append(row["test_acc"])
    return [{"method": method, "labeled_frac": frac, "mean": statistics.fmean(accs),
             "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "n": len(accs)}
            for (method, frac), accs in sorted(cells.items())]


def markdown_table(summary: list[dict]) -> str:
    """labeled_frac rows x method columns of 'mean ± std (n)'."""
    methods = sorted({s["method"] for s in summary})
    fracs = sorted({s["labeled_frac"] for s in summary})
    cell = {(s["method"], s["labeled_frac"]): f"{s['mean']:.4f} ± {s['std']:.4f} ({s['n']})" for s in summary}
    lines = ["| labeled_frac | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    lines += [f"| {f} | " + " | ".join(cell.get((m, f), "") for m in methods) + " |" for f in fracs]
    return "\n".join(lines) + "\n"


def plot_curve(summary: list[dict], model: str, title: str):
    """A matplotlib figure: test accuracy vs labeled fraction (log x), a line per method, ± std error bars."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({s["method"] for s in summary}):
        points = [s for s in summary if s["method"] == method]
        ax.errorbar([s["labeled_frac"] for s in points], [s["mean"] for s in points],
                    yerr=[s["std"] for s in points], marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("labeled fraction of the training split (log scale)")
    ax.set_ylabel(f"test accuracy ({model}), mean ± std over seeds")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="ssl.method")
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
