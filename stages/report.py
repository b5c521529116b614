"""Stage report: one table of every model's train/valid/test loss and accuracy.

Writes reports/summary.json (a DVC metrics file) and reports/summary.md.
"""
import argparse
import json
from pathlib import Path

from fewlabels.atomic import write_json, write_text
from fewlabels.metrics import markdown_table, summary_rows
from stages._common import load_params, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("metrics", type=Path, help="metrics/ (one <model>.json per model)")
    parser.add_argument("out", type=Path, help="reports/ (summary.json, summary.md)")
    args = parser.parse_args()
    p = load_params()
    per_model = {}
    for model in p.models:
        with open(args.metrics / f"{model}.json") as f:
            per_model[model] = json.load(f)
    rows = summary_rows(per_model)
    header = f"# {p.dataset}: labeled_frac={p.labeled_frac}, ssl.method={p.ssl.method}, seed={p.seed}\n\n"
    write_json(args.out / "summary.json", rows)
    write_text(args.out / "summary.md", header + markdown_table(rows))
    print(header + markdown_table(rows))


if __name__ == "__main__":
    run(main)
