"""The label-efficiency curve in one command: queue DVC experiments over labeled_frac x ssl.method x seed,
run them, and draw test accuracy vs labeled fraction (mean ± std over seeds) from `dvc exp show --json`.

    python bench/label_curve.py                          # the default grid (hours on a CPU, minutes on a GPU)
    python bench/label_curve.py --plot-only              # redraw from the experiments already run
    python bench/label_curve.py --fracs 0.1 1.0 --seeds 0 1 2 --set train.epochs=30

Several hosts share one grid: each runs its shard and pushes its experiments (git refs to the Git remote,
their outputs to the default DVC remote); any host then pulls them all and draws the whole curve:

    python bench/label_curve.py --shard 0/2 --git-remote origin     # on host A
    python bench/label_curve.py --shard 1/2 --git-remote origin     # on host B
    python bench/label_curve.py --plot-only --git-remote origin     # anywhere, afterwards

On a host with several GPUs, --jobs N runs N experiments at once, each on a GPU of its own (the train stage
claims one: fewlabels.distributed.claim_gpu; FEWLABELS_GPU_SLOTS=k lets k experiments share each GPU).

Writes reports/label_curve.csv (one row per run; a DVC plot in `dvc plots show`) and
reports/label_curve.png, and prints the table of means. The CSV accumulates: rows of earlier sessions stay,
and a new run replaces the row of the same labeled_frac, method, recipe (its settings beyond the defaults:
fewlabels.curve.recipe), seed and model. With every label kept there is nothing unlabeled, so at
labeled_frac 1.0 only `skip` runs.
"""
import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from dvc.api import read as read_output
from dvc.exceptions import PathMissingError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from fewlabels.atomic import atomic_path  # noqa: E402
from bench.curve import (FIELDS, curve_rows, markdown_table, merge, plot_curve, protocol, queue_tasks,  # noqa: E402
                             summarize)
from fewlabels.params import load  # noqa: E402

POLL_S = 10  # seconds between looks at the queue


def dvc(*args: str) -> str:
    return subprocess.run(["dvc", *args], check=True, capture_output=True, text=True).stdout


def grid(fracs, methods, seeds, shard: tuple[int, int] = (0, 1)) -> list[tuple[float, str, int]]:
    """The (labeled_frac, ssl.method, seed) cells of shard i of n: every n-th cell, from the i-th. At
    labeled_frac 1.0 nothing is unlabeled, so only skip runs there."""
    cells = [(frac, method, seed) for frac in fracs for method in methods for seed in seeds
             if frac < 1.0 or method == "skip"]
    i, n = shard
    return cells[i::n]


def refuse_uncommitted_settings() -> None:
    """A queued experiment starts from the workspace, so an edit left in params.yaml or dvc.yaml (say, the
    params of the last `dvc exp run`, which DVC applies to the workspace) would silently join every cell."""
    changed = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", "params.yaml", "dvc.yaml"],
                             check=True, capture_output=True, text=True).stdout.split()  # staged or not
    if changed:
        sys.exit(f"error: uncommitted changes in {', '.join(changed)}, which every queued experiment would "
                 "inherit: commit them, or restore them (git checkout params.yaml dvc.yaml) and "
                 "pass settings with --set")


def queue_grid(cells, extra_sets) -> int:
    for frac, method, seed in cells:
        sets = [f"labeled_frac={frac}", f"ssl.method={method}", f"seed={seed}", *extra_sets]
        dvc("exp", "run", "--queue", *[a for s in sets for a in ("-S", s)])
    return len(cells)


def shard_arg(text: str) -> tuple[int, int]:
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, e.g. 0/2; got {text!r}")
    return int(i), int(n)


def wait_for_queue() -> list[str]:
    """Block until no queued or running experiment is left; say which failed; return the ones that ran."""
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
    return [name for name, status in tasks.items() if status == "Success"]


def with_run_records(rows: list[dict]) -> list[dict]:
    """Add each run's device, training seconds and last pseudo-label accuracy from its runs/<model>.json (a
    cached output, not a metric). A run whose record this cache lacks (a commit made on another host, say)
    is left out, with a line saying so."""
    kept = []
    for row in rows:
        try:
            record = json.loads(read_output(f"runs/{row['model']}.json", rev=row["rev"]))
        except PathMissingError:
            print(f"left out {row['rev'][:8]} (labeled_frac {row['labeled_frac']}, {row['method']}, seed "
                  f"{row['seed']}): its runs/{row['model']}.json is in no cache here; `dvc pull` it",
                  file=sys.stderr)
            continue
        kept.append(row)
        rounds = record.get("pseudo_labels")  # none: skip, or an older run
        row.update(device=record["device"], train_seconds=round(record["train_seconds"], 1), protocol=protocol(record),
                   pseudo_label_acc=round(rounds[-1]["acc"], 4) if rounds and rounds[-1]["acc"] is not None else "")
    return kept


def json_lines(path: Path) -> list[dict]:
    """A results file of JSON lines, one run each (bench/results/*.jsonl)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_rows(out: Path) -> list[dict]:
    """The rows of out/label_curve.csv (as text), none when it does not exist yet."""
    if not (out / "label_curve.csv").exists():
        return []
    with open(out / "label_curve.csv", newline="") as f:
        return list(csv.DictReader(f))


def collect(model: str, out: Path) -> list[dict]:
    """Every experiment's row for `model` (from `dvc exp show` and each run's record), merged into
    out/label_curve.csv, which is rewritten and returned."""
    rows = merge(read_rows(out), with_run_records(curve_rows(json.loads(dvc("exp", "show", "--json")), model)))
    csv_path = out / "label_curve.csv"
    if not rows:
        sys.exit(f"error: no experiment has metrics/{model}.json yet; run without --plot-only first")
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def start_and_wait(jobs: int) -> list[str]:
    """Run the queued experiments, `jobs` at once; the names of those that succeeded."""
    # Not through dvc(): the queue's worker would inherit the captured pipe and keep it open to the end.
    subprocess.run(["dvc", "queue", "start", "--jobs", str(jobs)], check=True, stdout=subprocess.DEVNULL)
    return wait_for_queue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fracs", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.25, 1.0])
    parser.add_argument("--methods", nargs="+", default=["skip", "fixmatch"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--model", help="whose test accuracy to plot (default: the first of params.yaml models)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra -S for every experiment")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at once (on a CPU each uses every core)")
    parser.add_argument("--shard", type=shard_arg, default=(0, 1), metavar="I/N",
                        help="run only shard I of N of the grid (one per host)")
    parser.add_argument("--git-remote", help="push this host's experiments there, and pull every host's before drawing")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    model = args.model or load("params.yaml").models[0]

    if not args.plot_only:
        refuse_uncommitted_settings()
        cells = grid(args.fracs, args.methods, args.seeds, args.shard)
        print(f"queued {queue_grid(cells, args.sets)} experiments", flush=True)
        ran = start_and_wait(args.jobs)
        if args.git_remote and ran:
            dvc("exp", "push", args.git_remote, *ran)  # git refs, and their outputs to the DVC remote
    if args.git_remote:
        dvc("exp", "pull", args.git_remote)  # every host's experiments of this commit, with their outputs

    summary = summarize(collect(model, args.out))
    fig = plot_curve(summary, model, "label efficiency")
    with atomic_path(args.out / "label_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
