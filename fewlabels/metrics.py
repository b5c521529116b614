"""Classification metrics as plain numbers, and the models x metrics summary table."""
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, f1_score

SCORES = ("accuracy", "loss", "macro_f1")  # what metrics/<model>.json holds per split: scores, nothing else


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


def pseudo_label_scores(targets: torch.Tensor, weights: torch.Tensor, hidden: np.ndarray,
                        positions: np.ndarray) -> dict:
    """How good a method's pseudo-labels of the unlabeled images are, against their hidden labels: `acc`
    (each image that has one counted once; None when none has one), `weighted_acc` (each counted by the
    weight the loss gives it) and `covered` (the share of all unlabeled images with a weight above 0).
    targets (-1: none), weights: per training image; hidden: the true labels at `positions`, the unlabeled
    images' places."""
    chosen, weight = targets.cpu().numpy()[positions], weights.float().cpu().numpy()[positions].astype(np.float64)
    right = chosen == hidden
    return {"acc": float(right[chosen >= 0].mean()) if (chosen >= 0).any() else None,
            "weighted_acc": float((weight * right).sum() / max(weight.sum(), 1e-12)),
            "covered": float((weight > 0).mean())}


def scores(metrics: dict) -> dict:
    """The part of classification_metrics that is a DVC metric."""
    return {k: metrics[k] for k in SCORES}


# (header, file, key): file "metrics" is metrics/<model>.json (scores), "run" is runs/<model>.json (what the
# training run was and took).
SUMMARY_COLUMNS = [
    ("params", "run", "n_parameters"),
    ("best epoch", "run", "best_epoch"),
    ("valid acc", "metrics", "valid.accuracy"),
    ("test loss", "metrics", "test.loss"), ("test acc", "metrics", "test.accuracy"),
    ("test macro-F1", "metrics", "test.macro_f1"),
    ("train s", "run", "train_seconds"),
]


def _lookup(record: dict, key: str):
    for part in key.split("."):
        record = record[part]
    return record


def summary_rows(per_model: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """{model: {"metrics": ..., "run": ...}} -> {model: {header: value}} for the comparison table."""
    return {model: {h: _lookup(files[f], k) for h, f, k in SUMMARY_COLUMNS} for model, files in per_model.items()}


def labels_line(used: dict) -> str:
    """fewlabels.splits.labels_used's record in words: 'labels used: 600 of 60,000 (1.00%): 540 train, 60 valid'."""
    return (f"labels used: {used['total']:,} of {used['of']:,} ({used['total'] / used['of']:.2%}): "
            f"{used['train']:,} train, {used['valid']:,} valid")


def markdown_table(rows: dict[str, dict]) -> str:
    headers = ["model"] + [h for h, _, _ in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for model, row in rows.items():
        cells = [f"{v:,}" if isinstance(v, int) else f"{v:.4f}" if "loss" in h or "acc" in h or "F1" in h
                 else f"{v:.1f}" for h, v in row.items()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
