"""Stage report: one table of every model's scores and what its training run took -> reports/summary.md.

The scores themselves are DVC metrics in metrics/<model>.json; this table is for reading, so it does not
repeat them as another metrics file.
"""
import argparse
import json
from pathlib import Path

from fewlabels.atomic import write_text
from fewlabels.metrics import markdown_table, summary_rows
from stages._common import load_params, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("metrics", type=Path, help="metrics/ (one <model>.json per model)")
    parser.add_argument("runs", type=Path, help="runs/ (one <model>.json per model)")
    parser.add_argument("out", type=Path, help="reports/summary.md")
    args = parser.parse_args()
    p = load_params()
    per_model = {}
    for model in p.models:
        per_model[model] = {}
        for kind, directory in (("metrics", args.metrics), ("run", args.runs)):
            with open(directory / f"{model}.json") as f:
                per_model[model][kind] = json.load(f)
        per_model[model]["metrics"] = per_model[model]["metrics"][model]  # scores sit under the model's name
    header = f"# {p.dataset}: labeled_frac={p.labeled_frac}, ssl.method={p.ssl.method}, seed={p.seed}\n\n"
    text = header + markdown_table(summary_rows(per_model))
    write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    run(main)
