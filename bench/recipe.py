"""Train one recipe on the real data outside DVC and print its validation and test accuracy: for exploring
recipes fast. Choose among recipes on `valid_acc` (the kept epoch's, on the validation labels the run may use).

    python -m bench.recipe --frac 0.1 --model bn_cnn \
        train.epochs=30 train.augment=flip_crop ssl.method=fixmatch ssl.unlabeled_ratio=3

Settings default to params.yaml; `section.key=value` overrides them (as `dvc exp run -S`: fewlabels.params.override).
Writes one JSON line with the recipe, test accuracy and training seconds to --out (appends).
"""
import argparse
import json
from pathlib import Path

import torch

from bench.common import SPEC, fashion_model, local_mirror, run_indices
from fewlabels.data import fit_inputs
from fewlabels.engine import fit
from fewlabels.inference import bf16, loss_and_accuracy, predict_trained, resolve_device
from fewlabels.formats import load_idx_dataset
from fewlabels import params as schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, help="Fashion-MNIST's gz files (default: params.yaml's file:// mirror)")
    parser.add_argument("--frac", type=float, default=1.0, help="labeled_frac")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--seed", type=int, help="seed (default: params.yaml's)")
    parser.add_argument("--out", type=Path, help="append the result as a JSON line here")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args()
    raw = schema.read("params.yaml")
    raw["labeled_frac"] = args.frac
    if args.seed is not None:
        raw["seed"] = args.seed
    p = schema.validate(schema.override(raw, args.overrides))
    d = load_idx_dataset(args.raw or local_mirror(), SPEC)
    idx = run_indices(d["y_train"], args.frac, p.seed)
    cfg = p.train
    model = fashion_model(args.model)
    inputs = fit_inputs(d["x_train"], d["y_train"], idx.train, idx.valid_labeled, idx.labeled, idx.unlabeled)
    result = fit(model, inputs, cfg, p.seed, p.ssl)
    device = resolve_device(cfg.device)
    test_loss, test_acc = loss_and_accuracy(
        predict_trained(model, result, torch.from_numpy(d["x_test"]), device, bf16(device, cfg)),
        torch.from_numpy(d["y_test"]).to(device))
    kept = result["history"][result["best_epoch"] - 1]  # the epoch whose weights were kept
    row = {"model": args.model, "labeled_frac": args.frac, "seed": p.seed, "overrides": args.overrides,
           "valid_labels": len(idx.valid_labeled), "valid_acc": kept["valid_acc"], "test_acc": test_acc,
           "test_loss": test_loss, "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
           "train_seconds": round(result["train_seconds"], 2), "device": result["device"]}
    print(json.dumps(row))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
