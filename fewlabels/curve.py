"""The label-efficiency curve: test accuracy vs labeled fraction, one line per ssl.method.

Reads the JSON of `dvc exp show --json` and the text of `dvc queue status`; plain functions, no I/O.
"""
import matplotlib

matplotlib.use("Agg")  # batch jobs and containers have no display
import matplotlib.pyplot as plt  # noqa: E402


def _experiments(node):
    """Every experiment/commit record in `dvc exp show --json` output: dicts whose 'data' has params."""
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            yield data
        for value in node.values():
            yield from _experiments(value)
    elif isinstance(node, list):
        for value in node:
            yield from _experiments(value)


def curve_points(exp_show: list, model: str) -> dict[tuple[float, str], float]:
    """{(labeled_frac, ssl.method): test accuracy of `model`}, newest experiment winning per cell."""
    points = {}
    records = sorted(_experiments(exp_show), key=lambda d: d.get("timestamp") or "")
    for data in records:
        params = data["params"].get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics", {}).get(f"metrics/{model}.json", {}).get("data")
        if not metrics or "labeled_frac" not in params:
            continue
        points[(float(params["labeled_frac"]), params["ssl"]["method"])] = metrics["test"]["accuracy"]
    return points


def curve_table(points: dict[tuple[float, str], float], methods: list[str]) -> list[dict]:
    """Rows {labeled_frac, <method>: accuracy or None} sorted by labeled_frac: a wide CSV for DVC plots."""
    fracs = sorted({frac for frac, _ in points})
    return [{"labeled_frac": f, **{m: points.get((f, m)) for m in methods}} for f in fracs]


def plot_curve(rows: list[dict], methods: list[str], model: str, title: str):
    """A matplotlib figure: test accuracy vs labeled fraction (log x), one line per method."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        xs = [r["labeled_frac"] for r in rows if r[method] is not None]
        ys = [r[method] for r in rows if r[method] is not None]
        ax.plot(xs, ys, marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("labeled fraction of the training split")
    ax.set_ylabel(f"test accuracy ({model})")
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
