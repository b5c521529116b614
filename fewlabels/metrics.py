"""Classification metrics as plain numbers, and the models x metrics summary table."""
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, f1_score


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Loss, accuracy, macro-F1, per-class accuracy and the confusion matrix (rows: true class)."""
    logits, labels = logits.float().cpu(), labels.cpu()
    pred = logits.argmax(1).numpy()
    true = labels.numpy()
    cm = confusion_matrix(true, pred, labels=np.arange(len(classes)))
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "accuracy": float((pred == true).mean()),
        "macro_f1": float(f1_score(true, pred, average="macro", labels=np.arange(len(classes)), zero_division=0)),
        "per_class_accuracy": {name: float(a) for name, a in zip(classes, per_class)},
        "confusion_matrix": cm.tolist(),
    }


SUMMARY_COLUMNS = [  # (header, key in the per-model metrics JSON)
    ("params", "n_parameters"),
    ("epochs", "epochs_run"),
    ("train loss", "train.loss"), ("train acc", "train.accuracy"),
    ("valid loss", "valid.loss"), ("valid acc", "valid.accuracy"),
    ("test loss", "test.loss"), ("test acc", "test.accuracy"), ("test macro-F1", "test.macro_f1"),
    ("train s", "train_seconds"),
]


def _lookup(metrics: dict, key: str):
    for part in key.split("."):
        metrics = metrics[part]
    return metrics


def summary_rows(per_model: dict[str, dict]) -> dict[str, dict]:
    """{model: {header: value}} for the comparison table."""
    return {model: {h: _lookup(m, k) for h, k in SUMMARY_COLUMNS} for model, m in per_model.items()}


def markdown_table(rows: dict[str, dict]) -> str:
    headers = ["model"] + [h for h, _ in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for model, row in rows.items():
        cells = [f"{v:,}" if isinstance(v, int) else f"{v:.4f}" if "loss" in h or "acc" in h or "F1" in h
                 else f"{v:.1f}" for h, v in row.items()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
