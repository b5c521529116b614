"""fewlabels.metrics against figures worked out by hand."""
import math

import numpy as np
import pytest
import torch

from fewlabels.metrics import classification_metrics, pseudo_label_scores

CLASSES = ["a", "b", "c"]


def one_hot_logits(pred: list[int], n_classes: int = 3, confidence: float = 2.0) -> torch.Tensor:
    """Logits whose argmax is `pred`: `confidence` on the predicted class, 0 elsewhere."""
    logits = torch.zeros(len(pred), n_classes)
    logits[torch.arange(len(pred)), torch.tensor(pred)] = confidence
    return logits


def test_confusion_matrix_per_class_accuracy_and_macro_f1_by_hand():
    true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    pred = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0]
    m = classification_metrics(one_hot_logits(pred), torch.tensor(true), CLASSES)
    # rows: true class, columns: predicted class
    assert m["confusion_matrix"] == [[3, 1, 0],
                                     [0, 2, 1],
                                     [1, 0, 2]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["per_class_accuracy"] == pytest.approx({"a": 3 / 4, "b": 2 / 3, "c": 2 / 3})
    # per class: precision = diagonal / column sum, recall = diagonal / row sum, F1 their harmonic mean
    f1 = {"a": 2 * (3 / 4) * (3 / 4) / (3 / 4 + 3 / 4),   # precision 3/4, recall 3/4
          "b": 2 * (2 / 3) * (2 / 3) / (2 / 3 + 2 / 3),   # precision 2/3, recall 2/3
          "c": 2 * (2 / 3) * (2 / 3) / (2 / 3 + 2 / 3)}   # precision 2/3, recall 2/3
    assert m["macro_f1"] == pytest.approx(sum(f1.values()) / 3)


def test_loss_is_the_mean_cross_entropy():
    # Each row puts logit 2 on its prediction and 0 on the two others: p(pred) = e^2 / (e^2 + 2).
    right = -math.log(math.exp(2) / (math.exp(2) + 2))
    wrong = -math.log(1 / (math.exp(2) + 2))
    m = classification_metrics(one_hot_logits([0, 1, 2, 0]), torch.tensor([0, 1, 2, 1]), CLASSES)
    assert m["loss"] == pytest.approx((3 * right + wrong) / 4)


def test_a_class_never_predicted_or_absent_counts_as_zero_not_an_error():
    m = classification_metrics(one_hot_logits([0, 0, 1]), torch.tensor([0, 1, 1]), CLASSES)
    assert m["confusion_matrix"][2] == [0, 0, 0]      # class c: no test image
    assert m["per_class_accuracy"]["c"] == 0.0
    # F1: a = 2*(1/2*1)/(1/2+1) = 2/3, b = 2*(1*1/2)/(1+1/2) = 2/3, c = 0 (zero_division=0)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_pseudo_label_scores_by_hand():
    """Five training images; positions 1-4 unlabeled (hidden labels 1, 1, 2, 0); position 0 is labeled and
    never counts. Right at 1 (weight 1.0) and 3 (0.5); wrong at 2 (weight 0.5) and 4 (weight 0)."""
    targets = torch.tensor([0, 1, 0, 2, 1])
    weights = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.0])
    got = pseudo_label_scores(targets, weights, np.array([1, 1, 2, 0]), np.array([1, 2, 3, 4]))
    assert got == pytest.approx({"acc": 2 / 4, "weighted_acc": 1.5 / 2.0, "covered": 3 / 4})
    # a batch-by-batch method's image that no batch brought (-1, weight 0) has no label to be right or wrong
    targets[4] = -1
    got = pseudo_label_scores(targets, weights, np.array([1, 1, 2, 0]), np.array([1, 2, 3, 4]))
    assert got == pytest.approx({"acc": 2 / 3, "weighted_acc": 1.5 / 2.0, "covered": 3 / 4})
    # none of the unlabeled images has a label: no accuracy, rather than a 0.0 that reads as a score
    targets[1:] = -1
    got = pseudo_label_scores(targets, torch.zeros(5), np.array([1, 1, 2, 0]), np.array([1, 2, 3, 4]))
    assert got == {"acc": None, "weighted_acc": 0.0, "covered": 0.0}
