"""The label-efficiency curve in one command: queue DVC experiments over labeled_frac x ssl.method x seed,
run them, and draw test accuracy vs labeled fraction (mean ± std over seeds) from `dvc exp show --json`.

    python bench/label_curve.py                          # the default grid (hours on a CPU, minutes on a GPU)
    python bench/label_curve.py --plot-only              # redraw from the experiments already run
    python bench/label_curve.py --fracs 0.1 1.0 --seeds 0 1 2 --set train.epochs=30

Writes reports/label_curve.csv (one row per run; a DVC plot in `dvc plots show`) and
reports/label_curve.png, and prints the table of means. With every label kept there is nothing unlabeled, so
at labeled_frac 1.0 only `skip` runs.
"""
import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from dvc.api import read as read_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from fewlabels.atomic import atomic_path  # noqa: E402
from fewlabels.curve import FIELDS, curve_rows, markdown_table, plot_curve, queue_tasks, summarize  # noqa: E402
from fewlabels.params import load  # noqa: E402

POLL_S = 10  # seconds between looks at the queue


def dvc(*args: str) -> str:
    return subprocess.run(["dvc", *args], check=True, capture_output=True, text=True).stdout


def queue_grid(fracs, methods, seeds, extra_sets) -> int:
    n = 0
    for frac in fracs:
        for method in methods:
            if frac == 1.0 and method != "skip":
                continue  # nothing is unlabeled: identical to skip
            for seed in seeds:
                sets = [f"labeled_frac={frac}", f"ssl.method={method}", f"seed={seed}", *extra_sets]
                dvc("exp", "run", "--queue", *[a for s in sets for a in ("-S", s)])
                n += 1
    return n


def wait_for_queue() -> None:
    """Block until no queued or running experiment is left; say which failed."""
    while True:
        tasks = queue_tasks(dvc("queue", "status"))
        active = sum(status in ("Queued", "Running") for status in tasks.values())
        print(f"{active} experiment(s) queued or running", flush=True)
        if not active:
            break
        time.sleep(POLL_S)
    failed = [name for name, status in tasks.items() if status == "Failed"]
    if failed:
        print("failed experiments (see `dvc queue logs NAME`):\n  " + "\n  ".join(failed), file=sys.stderr)


def with_run_records(rows: list[dict]) -> list[dict]:
    """Add each run's device and training seconds from its runs/<model>.json (a cached output, not a metric)."""
    for row in rows:
        record = json.loads(read_output(f"runs/{row['model']}.json", rev=row["rev"]))
        row.update(device=record["device"], train_seconds=round(record["train_seconds"], 1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fracs", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.25, 1.0])
    parser.add_argument("--methods", nargs="+", default=["skip", "fixmatch"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--model", help="whose test accuracy to plot (default: the first of params.yaml models)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra -S for every experiment")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at once (each uses every core)")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    model = args.model or load("params.yaml").models[0]

    if not args.plot_only:
        print(f"queued {queue_grid(args.fracs, args.methods, args.seeds, args.sets)} experiments", flush=True)
        # Not through dvc(): the queue's worker would inherit the captured pipe and keep it open to the end.
        subprocess.run(["dvc", "queue", "start", "--jobs", str(args.jobs)], check=True, stdout=subprocess.DEVNULL)
        wait_for_queue()

    rows = with_run_records(curve_rows(json.loads(dvc("exp", "show", "--json")), model))
    if not rows:
        sys.exit(f"error: no experiment has metrics/{model}.json yet; run without --plot-only first")
    with atomic_path(args.out / "label_curve.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    fig = plot_curve(summary, model, "label efficiency")
    with atomic_path(args.out / "label_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
