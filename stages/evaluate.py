"""Stage evaluate@<model>: test metrics of the best checkpoint -> metrics/<model>.json and a confusion matrix plot."""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in batch jobs and containers
import numpy as np
import torch
from sklearn.metrics import ConfusionMatrixDisplay

from fewlabels import prepared
from fewlabels.atomic import atomic_path, write_json
from fewlabels.engine import predict_trained, resolve_device
from fewlabels.metrics import classification_metrics
from fewlabels.models import build_model
from stages._common import load_params, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("checkpoint", type=Path, help="models/<model>.pt")
    parser.add_argument("prepared", type=Path, help="data/prepared/<dataset>")
    parser.add_argument("metrics", type=Path, help="metrics/<model>.json")
    parser.add_argument("plots", type=Path, help="eval/<model>: confusion.csv and confusion.png")
    args = parser.parse_args()
    p = load_params()
    record = torch.load(args.checkpoint, weights_only=True)
    d = prepared.load(args.prepared, "x_test", "y_test")
    x_test, y_test = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    device = resolve_device(p.train.device)
    model = build_model(record["model"], record["channels"], record["size"], len(record["classes"]))
    logits = predict_trained(model, record, x_test, device, p.train.amp)
    test = classification_metrics(logits, y_test, record["classes"])
    best = record["history"][record["best_epoch"] - 1]
    n_train = record["n_labeled"] + record["n_unlabeled"]
    metrics = {
        "model": record["model"],
        "test": {k: v for k, v in test.items() if k != "confusion_matrix"},
        # train: running mean over the best epoch's labeled batches (dropout on); valid: eval mode.
        "train": {"loss": best["train_loss"], "accuracy": best["train_acc"]},
        "valid": {"loss": best["valid_loss"], "accuracy": best["valid_acc"]},
        "n_labeled": record["n_labeled"], "n_unlabeled": record["n_unlabeled"],
        "labeled_frac": record["labeled_frac"], "actual_labeled_frac": record["n_labeled"] / n_train,
        "ssl": record["ssl"],
        "epochs_run": record["epochs_run"], "best_epoch": record["best_epoch"],
        "train_seconds": record["train_seconds"], "images_per_s": record["images_per_s"],
        "device": record["device"], "n_parameters": record["n_parameters"],
    }
    pred = logits.argmax(1).cpu().numpy()
    names = np.array(record["classes"])
    with atomic_path(args.plots, directory=True) as tmp:
        with open(tmp / "confusion.csv", "w") as f:  # one row per test image, for DVC's confusion template
            f.write("actual,predicted\n")
            f.writelines(f"{a},{b}\n" for a, b in zip(names[y_test.numpy()], names[pred]))
        display = ConfusionMatrixDisplay(np.array(test["confusion_matrix"]), display_labels=record["classes"])
        display.plot(xticks_rotation=45, colorbar=False)
        display.ax_.set_title(f"{record['model']}: test accuracy {test['accuracy']:.4f}")
        display.figure_.tight_layout()
        display.figure_.savefig(tmp / "confusion.png", dpi=100)
    write_json(args.metrics, metrics)
    print(f"{record['model']}: test loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}, "
          f"macro-F1 {test['macro_f1']:.4f} -> {args.metrics}")


if __name__ == "__main__":
    run(main)
