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
from fewlabels.datasets import DATASETS
from fewlabels.inference import bf16, predict_trained, resolve_device
from fewlabels.metrics import classification_metrics, scores
from fewlabels.models import build_model
from stages._common import layout, load_params, run, stage_model


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
    parser.add_argument("model", nargs="?", help="one of params.yaml's models (default: the one in DVC_STAGE)")
    args = parser.parse_args()
    p = load_params()
    name = stage_model(args.model, p)
    paths = layout(p.dataset, name)
    d = prepared.load(paths.prepared, DATASETS[p.dataset], *prepared.ARRAYS, "classes")
    # the validation labels the run had, no others
    valid = prepared.load_indices(paths.index / "valid.npy", len(d["y_train"]), "run `dvc repro -f index`")
    splits = {"test": (d["x_test"], d["y_test"]), "valid": (d["x_train"][valid], d["y_train"][valid])}
    # the model the train stage built for this data: what the model file must fit, shapes and all
    expected = {"channels": d["x_train"].shape[1], "size": d["x_train"].shape[2], "classes": d["classes"]}
    model = build_model(name, expected["channels"], expected["size"], len(expected["classes"]))
    record = checkpoint.load_model(paths.model, name, expected, model.state_dict())
    device = resolve_device(p.train.device)
    results, test_pred = {}, None
    for split, (x, y) in splits.items():
        logits = predict_trained(model, record, torch.from_numpy(x), device, bf16(device, p.train), p.evaluate.tta)
        results[split] = classification_metrics(logits, torch.from_numpy(y), record["classes"])
        if split == "test":
            test_pred = logits.argmax(1).cpu().numpy()
    test = results["test"]
    write_plots(paths.eval, name, test, d["y_test"], test_pred, record["classes"])
    write_json(paths.metrics, {name: {split: scores(m) for split, m in results.items()}})
    print(f"{name}: test loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}, "
          f"macro-F1 {test['macro_f1']:.4f} -> {paths.metrics}")


if __name__ == "__main__":
    run(main)
