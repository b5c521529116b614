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
    bf16: bool = False        # the run's forward passes autocast to bf16 (inference.bf16), a method's own ones too


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


@contextmanager
def dropout_off(model):
    """Dropout layers in eval mode (they pass everything through), every other layer as it was."""
    on = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.training]
    for m in on:
        m.eval()
    try:
        yield
    finally:
        for m in on:
            m.train()


def teacher_weak_student_strong(student, x, views, teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """(the teacher's class probabilities on its view, no gradient; the student's logits on a strong view).

    The teacher predicts with dropout off: a pseudo-label must not hang on which units dropout silenced (FixMatch's
    networks have no dropout). Batch norm stays as it is: the batch's own statistics when the teacher is the
    model in train mode (as USB's single forward of weak and strong views), the averages of an EMA teacher."""
    with torch.no_grad(), dropout_off(teacher):
        target = teacher(views.teacher(x)).float().softmax(1)
    with frozen_bn_stats(student):
        return target, student(views.strong(x)).float()


class DistAlign:
    """Distribution alignment, as USB's DistAlignEMAHook with its default uniform target: the teacher's class
    probabilities are multiplied by target / p_model and renormalised, where p_model is the running average
    (weight `momentum` old) of the unlabeled batches' mean probabilities, set by the first batch. Classes the
    model over-predicts are damped, rare ones lifted. A batch is recorded first, then aligned."""

    def __init__(self, n_classes: int, momentum: float, device):
        self.momentum = momentum
        self.p_target = torch.full((n_classes,), 1 / n_classes, device=device)
        self.p_model = torch.zeros(n_classes, device=device)
        self.updates = torch.zeros((), dtype=torch.int64, device=device)  # batches averaged in so far

    def update(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        m = torch.where(self.updates > 0, self.momentum, 0.0)  # the first batch sets p_model
        self.p_model.mul_(m).add_((1 - m) * probs.mean(0))
        self.updates += 1

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        aligned = probs * (self.p_target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(1, keepdim=True)

    def state_dict(self) -> dict:
        return {"p_model": self.p_model.clone(), "updates": self.updates.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.p_model.copy_(state["p_model"])
        self.updates.copy_(state["updates"])


class ThresholdMethod(Method):
    """FixMatch and its family (fixmatch, flexmatch, freematch): the teacher's predictions on a weak view of an
    unlabeled batch become the targets of a strong view where `mask` keeps them; optionally after distribution
    alignment (ssl.dist_align). FixMatch's mask: confidence at least ssl.threshold, whatever the class.

    They follow USB (microsoft/Semi-supervised-learning: semilearn/algorithms/fixmatch, hooks/dist_align.py).
    Each running statistic changes in one place only, an `update(probs, index)` fed with one unlabeled batch's
    class probabilities [B, C] and the images' positions in the training set [B]: the whole global batch in a
    distributed run (Run.gather), so the statistics stay the same on every rank; each rank masks its own share."""

    def __init__(self, ssl, run: Run):
        super().__init__(ssl, run)
        self.gather = run.gather
        self.align = DistAlign(run.classes, ssl.stats_ema, run.device) if ssl.dist_align else None

    def loss(self, student, x, views, teacher, index):
        probs, logits = teacher_weak_student_strong(student, x, views, teacher)
        targets, keep = self.select(probs, index)
        self.give(index, targets, keep)
        return masked_ce(logits, targets, keep)

    def select(self, probs: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target class [B], keep: 1.0 or 0.0 [B]) for the teacher's class probabilities [B, C] of the images at
        `index`. With alignment on, the batch is recorded by it first, then aligned."""
        everyone = self.gather(probs, index)
        if self.align is not None:
            self.align.update(*everyone)
            probs, everyone = self.align(probs), (self.align(everyone[0]), everyone[1])
        return probs.max(1).indices, self.mask(probs, index, everyone)

    def mask(self, probs: torch.Tensor, index: torch.Tensor, everyone) -> torch.Tensor:
        """1.0 where this share's prediction counts; `everyone`: (probs, index) of the whole global batch."""
        return (probs.max(1).values >= self.ssl.threshold).float()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "align": self.align.state_dict() if self.align else None}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.align:
            self.align.load_state_dict(state["align"])
