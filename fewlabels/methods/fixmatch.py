"""FixMatch (Sohn et al. 2020): the teacher's predictions on a weak view of an unlabeled batch become the targets
of a strong view where they are confident enough; optionally after distribution alignment.

The teacher is the model itself, or its weight average when train.ema and ssl.ema_teacher are on. FlexMatch and
FreeMatch (their modules) differ only in which predictions count: `mask`. They follow USB
(microsoft/Semi-supervised-learning: semilearn/algorithms/fixmatch, hooks/dist_align.py); the docstrings say
where this differs. Each running statistic changes in one place only, an `update(probs, index)` fed with one
unlabeled batch's class probabilities [B, C] and the images' positions in the training set [B]: the whole
global batch in a distributed run (Run.gather), so the statistics stay the same on every rank; each rank masks
its own share.
"""
import torch

from fewlabels.methods import base


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


class Method(base.Method):
    """A prediction counts when its confidence reaches ssl.threshold, whatever its class."""

    def __init__(self, ssl, run: base.Run):
        super().__init__(ssl, run)
        self.gather = run.gather
        self.align = DistAlign(run.classes, ssl.stats_ema, run.device) if ssl.dist_align else None

    def loss(self, student, x, views, teacher, index):
        probs, logits = base.teacher_weak_student_strong(student, x, views, teacher)
        targets, keep = self.select(probs, index)
        self.give(index, targets, keep)
        return base.masked_ce(logits, targets, keep)

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
