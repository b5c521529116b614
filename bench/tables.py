"""The docs' tables of measured figures, rendered from the files that hold the measurements.

A table sits in a markdown file between `<!-- table: NAME -->` and `<!-- /table -->`. `python -m bench.tables`
(`make docs`) rewrites every one in place; `--check` changes nothing and exits 1 naming each stale table.
Figures that no results file holds (one-off runs quoted in the prose) stay typed by hand.
"""
import argparse
import csv
import json
import re
import sys
from pathlib import Path

from bench import pareto, report
from bench.label_curve import json_lines
from bench.common import REPO, RESULTS
from bench.step_cost import PEAK_DTYPES, TEACHER, TEACHER_BATCH, VARIANTS
from bench.curve import markdown_table, merge, summarize, table

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
MARKER = re.compile(r"(<!-- table: ([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.DOTALL)
# Fashion-MNIST's train split holds 5,400 images of each of its 10 classes (54,000), its validation split 600 of
# each; the index stage keeps round(labeled_frac × 5,400) train labels of each (fewlabels.splits.labeled_index)
# and, under protocol v2, max(1, round(labeled_frac × 600)) validation labels (valid_index); v1 kept all 6,000.
CLASSES, PER_CLASS, VALID_PER_CLASS = 10, 5_400, 600
TARGET_FRAC, TARGET = 0.1, 0.915  # issue 6's test accuracy at 10% labels: cells that reach it are bold


def labels(frac: float, protocol: str = "v1") -> str:
    """'0.01 (600)': the labels a run used, train and validation ('0.01 (540 + 6,000)' under v1)."""
    train = CLASSES * round(frac * PER_CLASS)
    if protocol == "v1":
        return f"{frac} ({train:,} + {CLASSES * VALID_PER_CLASS:,})"
    return f"{frac} ({train + CLASSES * max(1, round(frac * VALID_PER_CLASS)):,})"


def method_order(method: str) -> tuple:
    return method != "skip", method  # skip, the supervised baseline, first


# the files ----------------------------------------------------------------------------------------

def recipe_runs(path: Path) -> list[dict]:
    """bench/recipe.py's JSON lines, each with its ssl.method (skip, params.yaml's, unless overridden)."""
    runs = json_lines(path)
    return [dict(r, method=dict(o.split("=", 1) for o in r["overrides"]).get("ssl.method", "skip")) for r in runs]


def curve_runs(path: Path) -> list[dict]:
    """A label-curve CSV's rows, numbers as numbers (as fewlabels.curve.merge reads back the kept rows)."""
    with open(path, newline="") as f:
        return merge(list(csv.DictReader(f)), [])


def pareto_points(path: Path) -> list[dict]:
    """reports/pareto.csv's points (bench.pareto.budget_points), numbers as numbers."""
    with open(path, newline="") as f:
        return [dict(r, labeled_frac=float(r["labeled_frac"]), epochs=int(r["epochs"]), n=int(r["n"]),
                     train_seconds=float(r["train_seconds"]), test_acc=float(r["test_acc"]), std=float(r["std"]))
                for r in csv.DictReader(f)]


def pareto_multipliers(points: list[dict]) -> str:
    """The label multiplier lines (bench.pareto.multipliers) of every method on the grid but skip, as a list."""
    return "".join(f"- {line}\n" for method in sorted({p["method"] for p in points} - {"skip"})
                   for line in pareto.multipliers(points, method))


def per_pass_runs(path: Path) -> list[dict]:
    """The frozen curve from before the step budget: its rows predate the recipe column (each ran that
    time's defaults), so they get an empty one."""
    with open(path, newline="") as f:
        return merge([dict(row, recipe="") for row in csv.DictReader(f)], [])


# the tables ---------------------------------------------------------------------------------------

def method_grid(runs: list[dict], seconds: bool = False) -> str:
    """labeled_frac rows × ssl.method columns of test accuracy, a row's seeds side by side ('a / b'); with
    `seconds`, a last column of training seconds. At 1.0 nothing is unlabeled: only skip runs there."""
    methods = sorted({r["method"] for r in runs}, key=method_order)
    head = ["labeled_frac (labels)", *methods] + ([f"train s ({' / '.join(methods)})"] if seconds else [])
    rows = []
    for frac in sorted({r["labeled_frac"] for r in runs}):
        here = {(r["method"], r["seed"]): r for r in runs if r["labeled_frac"] == frac}
        seeds = sorted({seed for _, seed in here})
        label = labels(frac) + (", " + " / ".join(f"seed {s}" for s in seeds) if len(seeds) > 1 else "")
        cells, took = [], []
        for method in methods:
            ran = [here.get((method, seed)) for seed in seeds]
            if not any(ran):
                cells.append("= skip" if frac == 1.0 else "")
                continue
            accs = " / ".join(f"{r['test_acc']:.4f}" if r else "–" for r in ran)
            met = frac == TARGET_FRAC and all(r and r["test_acc"] >= TARGET for r in ran)
            cells.append(f"**{accs}**" if met else accs)
            took.append(", ".join(f"{r['train_seconds']:.0f}" for r in ran if r))
        rows.append([label, *cells] + ([" / ".join(took)] if seconds else []))
    return table(head, rows)


def label_curve(runs: list[dict]) -> str:
    """One row per run, as reports/label_curve.csv holds them, the experiment's rev shortened."""
    runs = sorted(runs, key=lambda r: (r["protocol"], r["labeled_frac"], method_order(r["method"]), r["recipe"],
                                       r["seed"]))
    return table(["protocol", "labeled_frac (labels)", "method", "recipe", "seed", "model", "epochs", "device",
                  "test acc", "train s", "pseudo-label acc", "rev"],
                 [[r["protocol"], labels(r["labeled_frac"], r["protocol"]), r["method"],
                   f"`{r['recipe']}`" if r["recipe"] else "", r["seed"], f"`{r['model']}`", r["epochs"], r["device"],
                   f"{r['test_acc']:.4f}", f"{r['train_seconds']:.0f}", r.get("pseudo_label_acc") or "",
                   f"`{r['rev'][:8]}`"] for r in runs])


def ssl_methods(runs: list[dict]) -> str:
    """One row per run: its ssl.method and whatever else it alone sets, test accuracy, the difference to
    skip's in points, training seconds."""
    shared = set.intersection(*(set(r["overrides"]) for r in runs))
    skip = next(r["test_acc"] for r in runs if r["method"] == "skip")

    def name(r):
        extra = [o.split("=", 1) for o in r["overrides"] if o not in shared and not o.startswith("ssl.method=")]
        return f"`{r['method']}`" + "".join(
            f" + `{key.removeprefix('ssl.')}`" if value == "true" else f" + `{key}={value}`" for key, value in extra)

    rows = [[name(r), f"{r['test_acc']:.4f}",
             "" if r["method"] == "skip" else f"{(r['test_acc'] - skip) * 100:+.1f}".replace("-", "−"),
             f"{r['train_seconds']:.0f}"] for r in runs]
    return table(["ssl.method", "test acc", "vs skip", "train s"],
                 sorted(rows, key=lambda cells: (cells[0] != "`skip`", cells[0])))


def skip_tuning(runs: list[dict]) -> str:
    """One row per labeled_frac and recipe of bench/recipe.py's runs: validation accuracy on the run's own labels
    (which chooses) and test accuracy (the record), seeds side by side. Per labeled_frac, the recipe with the
    best seed-0 validation accuracy is marked chosen (bench.pareto.tuned_recipes)."""
    recipes = {}  # (labeled_frac, recipe) -> {seed: run}, in the file's order
    for r in runs:
        recipes.setdefault((r["labeled_frac"], " ".join(f"`{o}`" for o in r["overrides"])), {})[r["seed"]] = r
    chosen = {frac: " ".join(f"`{o}`" for o in overrides) for frac, overrides in pareto.tuned_recipes(runs).items()}
    rows = []
    for (frac, recipe), by_seed in sorted(recipes.items(), key=lambda item: item[0][0]):
        seeds = sorted(by_seed)
        test = [by_seed[s]["test_acc"] for s in seeds]
        rows.append([labels(frac, "v2"), recipe + (" **(chosen)**" if chosen.get(frac) == recipe else ""),
                     " / ".join(map(str, seeds)), " / ".join(f"{by_seed[s]['valid_acc']:.4f}" for s in seeds),
                     " / ".join(f"{t:.4f}" for t in test), f"{sum(test) / len(test):.4f}",
                     " / ".join(f"{by_seed[s]['train_seconds']:.0f}" for s in seeds)])
    return table(["labeled_frac (labels)", "recipe", "seeds", "valid acc (chooses)", "test acc (record only)",
                  "mean test acc", "train s"], rows)


def cpu_dispatch(results: list[dict]) -> str:
    """One row per fresh process of bench/probes/cpu_dispatch.py, per CPU it ran on (one results file each): the
    kernels asked for and got, and what they trained (same code: the files' git_rev)."""
    return table(["CPU", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "kernels", "weights md5", "test acc", "train s"],
                 [[result["environment"]["device_name"], r["ATEN_CPU_CAPABILITY"] or "(unset)",
                   r["ONEDNN_MAX_CPU_ISA"] or "(unset)", r["capability"], f"`{r['weights_md5'][:8]}…`",
                   f"{r['test_acc']:.4f}", f"{r['train_seconds']:.1f}"]
                  for result in results for r in result["runs"]])


def step_cost(result: dict) -> str:
    """One row per model and thread count of bench/step_cost.py: ms a training step per variant (a compiled
    one's first step, which compiles, in seconds beside it), and the teacher's pass at two batch sizes. A result
    with the CPU's matmul peak (`peak_gflops`, files from before it have none) also shows the peak per dtype and,
    beside each variant's ms, its GFLOP/s and their share of its dtype's peak."""
    steps = [r for r in result["rows"] if "first_step_s" in r]
    variants = list(dict.fromkeys(r["variant"] for r in steps))
    cell = {(r["model"], r["threads"], r["variant"]): r for r in result["rows"]}
    peaks = result.get("peak_gflops")
    dtypes = [d for d in PEAK_DTYPES if d in next(iter(peaks.values()))] if peaks else []  # float32 first
    rows = []
    for model, threads in dict.fromkeys((r["model"], r["threads"]) for r in steps):
        ran = [cell[model, threads, v] for v in variants]
        t = cell[model, threads, TEACHER]
        first = [f" (first {r['first_step_s']:.1f} s)" if VARIANTS[r["variant"]].compiled else "" for r in ran]
        rate = [f" · {r['gflops']:.1f} · {r['peak_share']:.1%}" if peaks else "" for r in ran]
        peak = [" / ".join(f"{peaks[str(threads)][d]:.0f}" for d in dtypes)] if peaks else []
        rows.append([f"`{model}`", threads, *peak,
                     *(f"{r['ms_per_step']:.1f}{f}{g}" for r, f, g in zip(ran, first, rate)),
                     f"{t['ms_per_step']:.1f} / {t['ms_at_teacher_batch']:.1f}"])
    return table(["model", "threads", *([f"matmul peak GFLOP/s: {' / '.join(dtypes)}"] if peaks else []),
                  *(f"{v} ms" + (" · GFLOP/s · share of peak" if peaks else "") for v in variants),
                  f"{TEACHER}: ms per {result['batch']} images at batch {result['batch']} / {TEACHER_BATCH}"], rows)


def selection(runs: list[dict]) -> str:
    """One row per run of bench/probes/selection.py: the recipe, and the held-out validation accuracy (and, for the
    record, the test accuracy) of the checkpoint each rule keeps."""
    rows = []
    for r in sorted(runs, key=lambda r: (" ".join(r["set"]), r["labeled_frac"], r["seed"])):
        best, last = r["valid_acc_rule"], r["last_rule"]
        rows.append([" ".join(f"`{s}`" for s in r["set"]) or "params.yaml's", labels(r["labeled_frac"], "v2"),
                     r["seed"], f"{best['held_out']:.4f} (epoch {best['epoch']})", f"{last['held_out']:.4f}",
                     f"{100 * (last['held_out'] - best['held_out']):+.2f}", f"{best['test']:.4f} / {last['test']:.4f}"])
    return table(["recipe", "labeled_frac (labels)", "seed", "valid_acc rule: held-out acc", "last: held-out acc",
                  "last − valid_acc (points)", "test acc (record only)"], rows)


def tables() -> dict[str, str]:
    """Every table by its marker name, rendered from the files as they are now."""
    grid = recipe_runs(RESULTS / "ssl_grid_h100.jsonl")
    per_pass = per_pass_runs(REPO / "reports" / "label_curve_per_pass.csv")
    points = pareto_points(REPO / "reports" / "pareto.csv")
    return {
        "bench": report.markdown(),
        "cpu_dispatch": cpu_dispatch([json.loads(p.read_text()) for p in sorted(RESULTS.glob("cpu_dispatch*.json"))]),
        "step_cost": step_cost(json.loads((RESULTS / "step_cost.json").read_text())),
        "step_cost_quota1": step_cost(json.loads((RESULTS / "step_cost_quota1.json").read_text())),
        "step_cost_bf16": step_cost(json.loads((RESULTS / "step_cost_bf16.json").read_text())),
        # ssl_grid.sh's cells train with flip_crop; its one flip_crop_cutout run is quoted in the prose
        "ssl_grid_h100": method_grid([r for r in grid if "train.augment=flip_crop" in r["overrides"]]),
        "ssl_methods_cpu": ssl_methods(recipe_runs(RESULTS / "ssl_methods_cpu.jsonl")),
        "label_curve": label_curve(curve_runs(REPO / "reports" / "label_curve.csv")),
        "label_curve_means": markdown_table(summarize(curve_runs(REPO / "reports" / "label_curve.csv"))),
        "label_curve_per_pass": method_grid(per_pass, seconds=True),
        "pareto": pareto.markdown(points),
        "pareto_multipliers": pareto_multipliers(points),
        "pareto_answer": pareto.answer(points),
        "selection": selection(json_lines(RESULTS / "selection.jsonl")),
        "skip_tuning": skip_tuning(json_lines(pareto.TUNING)),
    }


# the docs -----------------------------------------------------------------------------------------

def render(text: str, rendered: dict[str, str]) -> str:
    """`text` with every marked table replaced by its rendering."""
    return MARKER.sub(lambda m: m[1] + rendered[m[2]] + m[4], text)


def stale(docs: dict[str, str], rendered: dict[str, str]) -> list[str]:
    """'doc: name' of every marked table in `docs` ({path: text}) that differs from its rendering."""
    return [f"{doc}: {m[2]}" for doc, text in docs.items() for m in MARKER.finditer(text) if m[3] != rendered[m[2]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each stale table")
    args = parser.parse_args()
    docs = {str(path.relative_to(REPO)): path.read_text() for path in DOCS}
    rendered = tables()
    unknown = {m[2] for text in docs.values() for m in MARKER.finditer(text)} - set(rendered)
    if unknown:
        sys.exit(f"error: no table is named {', '.join(sorted(unknown))}; bench/tables.py renders "
                 f"{', '.join(rendered)}")
    if args.check:
        old = stale(docs, rendered)
        if old:
            sys.exit("stale: " + "; ".join(old) + " (run `make docs`)")
        return
    for doc, text in docs.items():
        new = render(text, rendered)
        if new != text:
            (REPO / doc).write_text(new)
            print(f"rewrote {doc}")


if __name__ == "__main__":
    main()
