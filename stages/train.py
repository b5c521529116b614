"""Stage train@<model>: fit one registry model on the labeled (and maybe unlabeled) training images.

Writes models/<model>.pt (best state_dict + what rebuilds the model + the training record)
and per-epoch curves with DVCLive in dvclive/<model>/.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from fewlabels import prepared
from fewlabels.atomic import atomic_path
from fewlabels.data import fit_inputs
from fewlabels.engine import fit
from fewlabels.models import build_model, count_parameters
from stages._common import load_params, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("prepared", type=Path, help="data/prepared/<dataset>")
    parser.add_argument("split", type=Path, help="data/split (train.npy, valid.npy)")
    parser.add_argument("index", type=Path, help="data/index (labeled.npy, unlabeled.npy)")
    parser.add_argument("out", type=Path, help="models/<model>.pt")
    parser.add_argument("live", type=Path, help="dvclive/<model>")
    args = parser.parse_args()
    p = load_params()
    d = prepared.load(args.prepared, "x_train", "y_train", "classes")
    x, y, classes = d["x_train"], d["y_train"], d["classes"]
    train_idx, valid_idx = np.load(args.split / "train.npy"), np.load(args.split / "valid.npy")
    labeled, unlabeled = np.load(args.index / "labeled.npy"), np.load(args.index / "unlabeled.npy")
    channels, size = x.shape[1], x.shape[2]
    torch.manual_seed(p.seed)
    model = build_model(args.model, channels, size, len(classes))
    n_params = count_parameters(model)
    print(f"{args.model}: {n_params:,} parameters; {len(labeled):,} labeled, {len(unlabeled):,} unlabeled images")
    with Live(str(args.live), dvcyaml=None, save_dvc_exp=False) as live:
        def log_epoch(row, scored):
            for key in ("train_loss", "train_acc", "valid_loss", "valid_acc", "lr"):
                split, _, metric = key.partition("_")
                live.log_metric(f"{split}/{metric}" if metric else key, row[key])
            live.next_step()

        inputs = fit_inputs(x, y, train_idx, valid_idx, labeled, unlabeled)
        result = fit(model, *inputs, p.train, p.seed, p.ssl, log_epoch)
    record = {
        "model": args.model, "channels": channels, "size": size, "classes": classes,
        "n_parameters": n_params, "n_labeled": len(labeled), "n_unlabeled": len(unlabeled),
        "labeled_frac": p.labeled_frac, "ssl": p.ssl.model_dump(), **result,
    }
    with atomic_path(args.out) as tmp:
        torch.save(record, tmp)
    print(f"{args.model}: best epoch {result['best_epoch']}, {result['train_seconds']:.1f}s training, "
          f"{result['images_per_s']:,.0f} images/s on {result['device']} -> {args.out}")


if __name__ == "__main__":
    run(main)
