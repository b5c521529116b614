"""What every semi-supervised method is made of (fewlabels.methods), and the pieces several of them share."""
from contextlib import contextmanager
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fewlabels.params import SSLConfig


class Run(NamedTuple):
    """What a method learns about the run it is part of when it is built."""
    classes: int              # logits per image
    unlabeled: np.ndarray     # the unlabeled images' positions in the training set
    n_images: int             # images in the training set
    device: torch.device
    labels: torch.Tensor      # the training set's labels [n_images], -1 at every unlabeled position
    # (probs, index) of this process's share -> (probs, index) of the whole global batch: the identity in one
    # process, every rank's share gathered in a distributed run (so running statistics stay equal on all ranks)
    gather: Callable = lambda probs, index: (probs, index)


class Method:
    """One run's method: `loss` of an unlabeled batch, and the running statistics it keeps between batches,
    held as the tensors named in STATE (the resume checkpoint saves them: state_dict / load_state_dict).
    Everything stays on the device. No method ever receives a hidden label: unlabeled batches carry none, and
    Run.labels holds -1 at every unlabeled position."""
    STATE: tuple[str, ...] = ()

    def __init__(self, ssl: SSLConfig, run: Run):
        self.ssl = ssl
        # The class each image's loss last trained it towards this epoch (-1: none yet) and the weight it had
        # (0: masked out): what pseudo_labels hands the caller to score. Not state: every epoch starts afresh.
        self.given = torch.full((run.n_images,), -1, dtype=torch.int64, device=run.device)
        self.given_weight = torch.zeros(run.n_images, device=run.device)

    def start_epoch(self, teacher, prep, images: torch.Tensor) -> None:
        """Before an epoch that trains on unlabeled batches: `teacher` may look at every training image (uint8
        [N, C, H, W] on the device; `prep` normalises them), e.g. to pseudo-label them all at once. A method
        that labels batch by batch starts its record of the epoch's pseudo-labels afresh."""
        self.given.fill_(-1)
        self.given_weight.zero_()

    def give(self, index: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | float) -> None:
        """Record the classes [B] and weights ([B], or one for all) a batch's loss trained the images at `index`
        towards."""
        self.given[index] = targets
        self.given_weight[index] = weights

    def pseudo_labels(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(class [N], weight [N]) of every training image after an epoch: what the loss trained each image
        towards (class -1, weight 0: an image no batch of this process brought this epoch); None when the
        method gave none (skip)."""
        return (self.given, self.given_weight) if bool((self.given >= 0).any()) else None

    def loss(self, student, x: torch.Tensor, views, teacher, index: torch.Tensor) -> torch.Tensor | None:
        """The loss of normalised unlabeled images `x` (at positions `index` of the training set) for `student`
        (what trains), given the run's augment.Views and `teacher` (the model, or its weight average; never
        the DDP wrapper); None: nothing to learn."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {name: getattr(self, name).clone() for name in self.STATE}

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            getattr(self, name).copy_(state[name])


def masked_ce(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the kept predictions only (keep: 1.0 or 0.0), averaged over the whole batch (FixMatch's form)."""
    return (F.cross_entropy(logits.float(), targets, reduction="none") * keep).mean()


@contextmanager
def frozen_bn_stats(model):
    """Batch norm still normalises with the batch's own statistics but leaves its running averages alone:
    strongly augmented views must not shift the statistics that test images are normalised with."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - momentum) * running + momentum * batch
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def teacher_weak_student_strong(student, x, views, teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """(the teacher's class probabilities on a weak view, no gradient; the student's logits on a strong view)."""
    with torch.no_grad():
        target = teacher(views.weak(x)).float().softmax(1)
    with frozen_bn_stats(student):
        return target, student(views.strong(x)).float()
