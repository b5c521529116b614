"""FreeMatch (Wang et al. 2023): FixMatch under self-adaptive thresholds, plus ssl.fairness_weight x its
self-adaptive fairness loss; as USB's (semilearn/algorithms/freematch: FreeMatchThresholingHook with its defaults,
mean confidence, not a quantile, no clipping; entropy_loss).

Running averages, each unlabeled batch weighted ssl.stats_ema old to 1 - stats_ema new: the batches' mean
confidence (time_p, the global threshold), their mean class probabilities (p_model) and the histogram of their
predicted classes (label_hist, for the fairness loss). Class c's threshold is time_p x p_model_c / max(p_model).
All start at 1/C, so thresholds start low and rise with the model's confidence. A batch is recorded, then masked.
ssl.threshold is unused.
"""
import torch
import torch.nn.functional as F

from fewlabels.methods import base


class Method(base.ThresholdMethod):
    STATE = ("time_p", "p_model", "label_hist")

    def __init__(self, ssl, run: base.Run):
        super().__init__(ssl, run)
        c, device = run.classes, run.device
        self.time_p = torch.full((), 1 / c, device=device)
        self.p_model = torch.full((c,), 1 / c, device=device)
        self.label_hist = torch.full((c,), 1 / c, device=device)

    def thresholds(self) -> torch.Tensor:
        return self.time_p * self.p_model / self.p_model.max()

    def update(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        m = self.ssl.stats_ema
        confidence, predicted = probs.max(1)
        self.time_p.mul_(m).add_(confidence.mean(), alpha=1 - m)
        self.p_model.mul_(m).add_(probs.mean(0), alpha=1 - m)
        hist = torch.bincount(predicted, minlength=len(self.p_model)).float()
        self.label_hist.mul_(m).add_(hist / hist.sum(), alpha=1 - m)

    def mask(self, probs, index, everyone):
        self.update(*everyone)
        confidence, predicted = probs.max(1)
        return (confidence >= self.thresholds()[predicted]).float()

    def loss(self, student, x, views, teacher, index):
        probs, logits = base.teacher_weak_student_strong(student, x, views, teacher)
        targets, keep = self.select(probs, index)
        self.give(index, targets, keep)
        fairness = fairness_loss(logits, keep, self.p_model, self.label_hist)
        return base.masked_ce(logits, targets, keep) + self.ssl.fairness_weight * fairness


def _inverse(t: torch.Tensor) -> torch.Tensor:
    """1 / t, and 0 where t is 0 (USB's replace_inf_to_zero(1 / t)); t carries no gradient."""
    return torch.where(t > 0, 1 / t, torch.zeros_like(t))


def _sum_normalised(t: torch.Tensor) -> torch.Tensor:
    return t / t.sum().clamp_min(1e-12)  # clamped: all zeros when no image was kept, rather than 0 / 0


def fairness_loss(logits: torch.Tensor, keep: torch.Tensor, p_model: torch.Tensor,
                  label_hist: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness loss (USB's entropy_loss) on the strong-view logits of the kept images:
    sum_c a_c log b_c with a = p_model / label_hist and b = the kept images' mean probabilities over their
    predicted-class histogram, each normalised to sum 1 (minus the cross-entropy H(a, b): it pushes the batch's
    predictions towards the classes the model predicts too rarely). 0 when no image is kept."""
    probs = logits.softmax(1)
    kept = keep.sum()
    mean_probs = (probs * keep[:, None]).sum(0) / kept.clamp_min(1)
    hist = (F.one_hot(probs.argmax(1), probs.shape[1]).float() * keep[:, None]).sum(0) / kept.clamp_min(1)
    model_side = _sum_normalised(p_model * _inverse(label_hist))
    batch_side = _sum_normalised(mean_probs * _inverse(hist))
    return (model_side * torch.log(batch_side + 1e-12)).sum() * (kept > 0)
