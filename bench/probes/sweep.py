"""Try project recipes for time to accuracy: every combination of the given models and train.* values.

    python -m bench.probes.sweep --model bn_cnn bn_small --set train.batch_size=256,512 --set train.lr=0.003,0.01 \
        --set train.scheduler=onecycle

Each combination runs bench.time_to_accuracy's project contender (params.yaml's recipe with the values on
top): budgets of 1, 2, ... epochs until one ends at the target on validation (train.epochs is the budget, so
it is not a sweep axis). Ranked by that budget's training seconds, chosen on validation; the budget's test
accuracy is recorded, never used to rank. Results go to bench/results/<name>.json.
"""
import argparse
import itertools
import sys

from bench.common import environment, fashion_mnist, save, train_recipe
from bench.time_to_accuracy import MAX_EPOCHS, TARGETS, project_contender
from fewlabels.inference import resolve_device
from fewlabels.errors import ParamError
from fewlabels.models import MODELS
from fewlabels.params import parse_value, split_override


def grid(pairs: list[str]) -> list[dict]:
    """['train.lr=0.003,0.01', 'train.epochs=3'] -> [{'train.lr': 0.003, 'train.epochs': 3}, {'train.lr': 0.01, ...}]."""
    axes = {}
    for pair in pairs:
        try:
            key, values = split_override(pair)
        except ParamError as err:
            sys.exit(f"error: --set: {err}")
        axes[key] = [parse_value(v) for v in values.split(",")]
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["cnn"], choices=sorted(MODELS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2", help="params.yaml train.* values to combine")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--target", type=float, default=TARGETS[0], help="validation accuracy a budget must reach")
    parser.add_argument("--max-epochs", type=int, default=MAX_EPOCHS, help="the longest budget tried")
    parser.add_argument("--name", default="sweep", help="results file: bench/results/<name>.json")
    args = parser.parse_args()
    env = environment(resolve_device(args.device))
    data = fashion_mnist()
    runs = []
    for model, values in itertools.product(args.model, grid(args.set)):
        cfg = train_recipe(values | {"train.device": args.device})
        result = project_contender(model, cfg, data, [args.target], args.max_epochs)
        runs.append({"model": model, "set": values, **result["budgets"][0],
                     "valid_acc_by_budget": [round(r["valid_acc"], 4) for r in result["runs"]]})
        print(f"SWEEP {model} {values}: budget {runs[-1]['epochs']} epochs, valid acc by budget "
              f"{runs[-1]['valid_acc_by_budget']}", flush=True)
    runs.sort(key=lambda r: (r["epochs"] is None, r["train_seconds"] or 0.0))
    save(args.name, {"protocol": "fixed budget chosen on validation", "target_valid_acc": args.target, "runs": runs,
                     "environment": env})


if __name__ == "__main__":
    main()
