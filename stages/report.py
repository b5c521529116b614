"""Stage report: one table of every model's scores and what its training run took -> reports/summary.md.

The scores themselves are DVC metrics in metrics/<model>.json; this table is for reading, so it does not
repeat them as another metrics file.
"""
import argparse
import json

from fewlabels.atomic import write_text
from fewlabels.metrics import labels_line, markdown_table, summary_rows
from stages._common import layout, load_params, run


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    p = load_params()
    paths = layout(p.dataset)
    per_model = {}
    for model in p.models:
        per_model[model] = {}
        for kind, directory in (("metrics", paths.metrics_dir), ("run", paths.runs_dir)):
            with open(directory / f"{model}.json") as f:
                per_model[model][kind] = json.load(f)
        per_model[model]["metrics"] = per_model[model]["metrics"][model]  # scores sit under the model's name
    used = per_model[p.models[0]]["run"]["labels_used"]  # the same index files for every model
    header = (f"# {p.dataset}: labeled_frac={p.labeled_frac}, ssl.method={p.ssl.method}, seed={p.seed}\n\n"
              f"{labels_line(used)}\n\n")
    text = header + markdown_table(summary_rows(per_model))
    write_text(paths.summary, text)
    print(text)


if __name__ == "__main__":
    run(main)
