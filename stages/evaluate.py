"""Stage evaluate@<model>: scores of the trained model -> metrics/<model>.json, plots -> eval/<model>/.

metrics/<model>.json holds test and valid accuracy, loss and macro-F1 and nothing else (DVC shows params
beside it), under the model's name, so `dvc exp show` names its columns `<model>.test.accuracy` (DVC prefixes
the file's path only to a name that several files share). eval/<model>/ holds per-class accuracy and the confusion matrix, as DVC plots and a PNG.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display in batch jobs and containers
import numpy as np
import torch
from sklearn.metrics import ConfusionMatrixDisplay

from fewlabels import checkpoint, prepared
from fewlabels.atomic import atomic_path, write_json
from fewlabels.engine import predict_trained, resolve_device
from fewlabels.metrics import classification_metrics, scores
from fewlabels.models import build_model
from stages._common import load_params, run


def write_plots(out: Path, model: str, test: dict, y_true: np.ndarray, pred: np.ndarray, classes: list[str]) -> None:
    names = np.array(classes)
    with atomic_path(out, directory=True) as tmp:
        with open(tmp / "confusion.csv", "w") as f:  # one row per test image, for DVC's confusion template
            f.write("actual,predicted\n")
            f.writelines(f"{a},{b}\n" for a, b in zip(names[y_true], names[pred]))
        with open(tmp / "per_class.csv", "w") as f:  # one row per class, for DVC's bar_horizontal template
            f.write("class,test_accuracy\n")
            f.writelines(f"{c},{a:.4f}\n" for c, a in test["per_class_accuracy"].items())
        display = ConfusionMatrixDisplay(np.array(test["confusion_matrix"]), display_labels=classes)
        display.plot(xticks_rotation=45, colorbar=False)
        display.ax_.set_title(f"{model}: test accuracy {test['accuracy']:.4f}")
        display.figure_.tight_layout()
        display.figure_.savefig(tmp / "confusion.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("checkpoint", type=Path, help="models/<model>.pt")
    parser.add_argument("prepared", type=Path, help="data/prepared/<dataset>")
    parser.add_argument("valid", type=Path, help="data/split/valid.npy")
    parser.add_argument("metrics", type=Path, help="metrics/<model>.json")
    parser.add_argument("plots", type=Path, help="eval/<model>: confusion.csv, per_class.csv, confusion.png")
    args = parser.parse_args()
    p = load_params()
    record = checkpoint.load_model(args.checkpoint, args.model)
    d = prepared.load(args.prepared, *prepared.ARRAYS)
    valid = np.load(args.valid)
    splits = {"test": (d["x_test"], d["y_test"]), "valid": (d["x_train"][valid], d["y_train"][valid])}
    device = resolve_device(p.train.device)
    model = build_model(record["model"], record["channels"], record["size"], len(record["classes"]))
    results, test_pred = {}, None
    for split, (x, y) in splits.items():
        logits = predict_trained(model, record, torch.from_numpy(x), device, p.train.amp)
        results[split] = classification_metrics(logits, torch.from_numpy(y), record["classes"])
        if split == "test":
            test_pred = logits.argmax(1).cpu().numpy()
    test = results["test"]
    write_plots(args.plots, args.model, test, d["y_test"], test_pred, record["classes"])
    write_json(args.metrics, {args.model: {split: scores(m) for split, m in results.items()}})
    print(f"{args.model}: test loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}, "
          f"macro-F1 {test['macro_f1']:.4f} -> {args.metrics}")


if __name__ == "__main__":
    run(main)
