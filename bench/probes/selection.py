"""Which checkpoint to keep when validation has few labels: the epoch best on the run's own validation labels
(train.select_metric=valid_acc) or the last one (train.select_metric=last)? Decided on held-out labels, never
on test.

One fit per (labeled_frac, seed, recipe) on the real Fashion-MNIST, under the label budget the pipeline uses
(fewlabels.splits: labeled_frac of the train split's labels and of the validation split's). Early stopping is
off (patience = epochs), so one run shows both rules: after every epoch the model is also scored on the
validation images whose labels the run never had (the rest of the 6,000), the held-out judge of the two rules.
Test accuracy of both checkpoints is printed for the record, and chooses nothing.

    python -m bench.probes.selection --fracs 0.01 0.05 --seeds 0 1 --set train.scheduler=onecycle
"""
import argparse
import json

import numpy as np
import torch

from bench.common import fashion_mnist, fashion_model, run_indices, train_recipe
from fewlabels.data import fit_inputs
from fewlabels.engine import Hooks, fit
from fewlabels.inference import Normalize, channel_stats, loss_and_accuracy, predict
from fewlabels.params import parse_value, split_override


def one_run(data: dict, model_name: str, frac: float, seed: int, overrides: dict) -> dict:
    """Held-out validation and test accuracy of the checkpoint each rule keeps, for one run."""
    idx = run_indices(data["y_train"], frac, seed)
    seen = idx.valid_labeled  # the run's validation labels
    held_out = np.setdiff1d(idx.valid, seen)  # never given to the run: judges the rules
    cfg = train_recipe(overrides)
    cfg = cfg.model_copy(update={"patience": cfg.epochs})  # no early stop: every epoch is a candidate
    normalize = Normalize(*channel_stats(torch.from_numpy(data["x_train"][idx.train])))
    judge = {name: (torch.from_numpy(data[f"x_{src}"][idx]), torch.from_numpy(data[f"y_{src}"][idx]))
             for name, src, idx in (("held_out", "train", held_out), ("test", "test", slice(None)))}
    epochs = []

    def log_epoch(row, scored):
        scores = {name: loss_and_accuracy(predict(scored, normalize, x, torch.device("cpu"), False), y)[1]
                  for name, (x, y) in judge.items()}
        epochs.append({"epoch": row["epoch"], "valid_acc": row["valid_acc"], **scores})

    torch.manual_seed(seed)
    model = fashion_model(model_name)
    inputs = fit_inputs(data["x_train"], data["y_train"], idx.train, seen, idx.labeled, idx.unlabeled)
    result = fit(model, inputs, cfg, seed, hooks=Hooks(log_epoch=log_epoch))
    best = max(epochs, key=lambda e: e["valid_acc"])  # the first of equals, as the engine keeps it
    return {"labeled_frac": frac, "seed": seed, "valid_labels": len(seen), "held_out": len(held_out),
            "train_seconds": round(result["train_seconds"], 1), "epochs": epochs,
            "valid_acc_rule": {"epoch": best["epoch"], "held_out": best["held_out"], "test": best["test"]},
            "last_rule": {"epoch": epochs[-1]["epoch"], "held_out": epochs[-1]["held_out"], "test": epochs[-1]["test"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fracs", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--model", default="bn_cnn")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="train.key=value on top of params.yaml")
    parser.add_argument("--out", help="append each run's result as a JSON line here")
    args = parser.parse_args()
    overrides = {key: parse_value(value) for key, value in map(split_override, args.sets)}
    data = fashion_mnist()
    for frac in args.fracs:
        for seed in args.seeds:
            row = one_run(data, args.model, frac, seed, overrides) | {"model": args.model, "set": args.sets}
            print(f"labeled_frac {frac} seed {seed} ({row['valid_labels']} validation labels): held-out accuracy "
                  f"valid_acc rule {row['valid_acc_rule']['held_out']:.4f} (epoch {row['valid_acc_rule']['epoch']}), "
                  f"last {row['last_rule']['held_out']:.4f}; test {row['valid_acc_rule']['test']:.4f} / "
                  f"{row['last_rule']['test']:.4f}", flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
