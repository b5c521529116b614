"""Which of the teacher's predictions become pseudo-labels: FixMatch's fixed threshold, FlexMatch's class-wise
curriculum, FreeMatch's self-adaptive thresholds (and its fairness loss), and distribution alignment.

Each follows USB (microsoft/Semi-supervised-learning: semilearn/algorithms/flexmatch/utils.py,
freematch/utils.py, freematch/freematch.py, hooks/dist_align.py); the class docstrings say where this differs.
Their running statistics are training state: the engine's TrainState holds them and its resume checkpoint
saves them (state_dict / load_state_dict). Each statistic changes in one place only, an `update(probs, index)`
method fed with one unlabeled batch's class probabilities [B, C] and the images' positions in the training set
[B]. In a distributed run that is the whole global batch, every rank's share gathered (PseudoLabels.gather), so
the statistics stay the same on every rank; each rank masks its own share. Everything stays on the device.
"""
import torch
import torch.nn.functional as F


class Statistics:
    """Running statistics held as the tensors named in STATE, updated in place."""
    STATE: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        return {name: getattr(self, name).clone() for name in self.STATE}

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            getattr(self, name).copy_(state[name])


class FixedThreshold(Statistics):
    """FixMatch: a prediction counts when its confidence reaches `cutoff`, whatever its class."""

    def __init__(self, cutoff: float):
        self.cutoff = cutoff

    def mask(self, probs: torch.Tensor, index: torch.Tensor, everyone) -> torch.Tensor:
        return (probs.max(1).values >= self.cutoff).float()


class FlexMatchThreshold(Statistics):
    """FlexMatch's curriculum pseudo-labelling (Zhang et al. 2021), with USB's defaults: threshold warm-up on,
    convex mapping.

    Every unlabeled image remembers the class of its latest prediction confident beyond `cutoff` (-1: none
    yet). A class's learning effect beta_c is the number of images holding it over the largest such number,
    counting the images not yet selected as one more group (the warm-up). Its threshold is
    cutoff x beta_c / (2 - beta_c): 0 for every class before any image is selected, low for the classes the
    model rarely predicts confidently, `cutoff` for the best-learnt one. A batch is masked with the thresholds
    from before it, then recorded.

    Deviation: USB leaves the effects unchanged when every unlabeled image holds the same value; here they are
    recomputed (the same zeros when none is selected; a model confident about one class only for every image
    gets that class 1, the others 0).
    """
    STATE = ("selected",)

    def __init__(self, cutoff: float, n_classes: int, unlabeled, n_images: int, device):
        self.cutoff, self.n_classes = cutoff, n_classes
        unlabeled = torch.as_tensor(unlabeled, dtype=torch.int64, device=device)
        # each training position's row in `selected` (-1 for labeled images, which never come here)
        self.row = torch.full((n_images,), -1, dtype=torch.int64, device=device)
        self.row[unlabeled] = torch.arange(len(unlabeled), device=device)
        self.selected = torch.full((len(unlabeled),), -1, dtype=torch.int64, device=device)

    def learning_effect(self) -> torch.Tensor:
        counts = torch.bincount(self.selected + 1, minlength=self.n_classes + 1)  # [not yet selected, class 0, ...]
        return counts[1:].float() / counts.max()

    def thresholds(self) -> torch.Tensor:
        beta = self.learning_effect()
        return self.cutoff * beta / (2 - beta)

    def update(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        confidence, predicted = probs.max(1)
        rows = self.row[index]
        self.selected[rows] = torch.where(confidence >= self.cutoff, predicted, self.selected[rows])

    def mask(self, probs: torch.Tensor, index: torch.Tensor, everyone) -> torch.Tensor:
        """This share's mask by the thresholds from before the batch; then the whole batch (`everyone`:
        (probs, index) of every rank's share) is recorded."""
        confidence, predicted = probs.max(1)
        keep = (confidence >= self.thresholds()[predicted]).float()
        self.update(*everyone)
        return keep


class FreeMatchThreshold(Statistics):
    """FreeMatch's self-adaptive thresholds (Wang et al. 2023), as USB's FreeMatchThresholingHook with its defaults
    (mean confidence, not a quantile; no clipping).

    Running averages, each step weighted `momentum` old to 1 - momentum new: the batches' mean confidence
    (time_p, the global threshold), their mean class probabilities (p_model) and the histogram of their
    predicted classes (label_hist, for the fairness loss). Class c's threshold is
    time_p x p_model_c / max(p_model). All start at 1/C, so thresholds start low and rise with the model's
    confidence. A batch is recorded first, then masked.
    """
    STATE = ("time_p", "p_model", "label_hist")

    def __init__(self, n_classes: int, momentum: float, device):
        self.momentum = momentum
        self.time_p = torch.full((), 1 / n_classes, device=device)
        self.p_model = torch.full((n_classes,), 1 / n_classes, device=device)
        self.label_hist = torch.full((n_classes,), 1 / n_classes, device=device)

    def thresholds(self) -> torch.Tensor:
        return self.time_p * self.p_model / self.p_model.max()

    def update(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        m = self.momentum
        confidence, predicted = probs.max(1)
        self.time_p.mul_(m).add_(confidence.mean(), alpha=1 - m)
        self.p_model.mul_(m).add_(probs.mean(0), alpha=1 - m)
        hist = torch.bincount(predicted, minlength=len(self.p_model)).float()
        self.label_hist.mul_(m).add_(hist / hist.sum(), alpha=1 - m)

    def mask(self, probs: torch.Tensor, index: torch.Tensor, everyone) -> torch.Tensor:
        """The whole batch (`everyone`: (probs, index) of every rank's share) is recorded; then this share masked."""
        self.update(*everyone)
        confidence, predicted = probs.max(1)
        return (confidence >= self.thresholds()[predicted]).float()


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


class DistAlign(Statistics):
    """Distribution alignment, as USB's DistAlignEMAHook with its default uniform target: the teacher's class
    probabilities are multiplied by target / p_model and renormalised, where p_model is the running average
    (weight `momentum` old) of the unlabeled batches' mean probabilities, set by the first batch. Classes the
    model over-predicts are damped, rare ones lifted. A batch is recorded first, then aligned."""
    STATE = ("p_model", "updates")

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


class PseudoLabels:
    """An unlabeled batch's targets: the teacher's most probable class, where the method's threshold rule keeps
    it, after distribution alignment when that is on. Holds all the running statistics of the run."""

    def __init__(self, rule: Statistics, align: DistAlign | None = None):
        self.rule, self.align = rule, align
        # (probs, index) -> (probs, index) of the whole global batch: this share alone in one process;
        # the engine sets distributed.all_gather_rows in a distributed run
        self.gather = lambda probs, index: (probs, index)

    def select(self, probs: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target class [B], keep: 1.0 or 0.0 [B]) for the teacher's class probabilities [B, C] of the images at
        `index` (their positions in the training set). A batch is recorded first by the alignment, then aligned."""
        everyone = self.gather(probs, index)
        if self.align is not None:
            self.align.update(*everyone)
            probs, everyone = self.align(probs), (self.align(everyone[0]), everyone[1])
        return probs.max(1).indices, self.rule.mask(probs, index, everyone)

    def state_dict(self) -> dict:
        return {"rule": self.rule.state_dict(), "align": self.align.state_dict() if self.align else None}

    def load_state_dict(self, state: dict) -> None:
        self.rule.load_state_dict(state["rule"])
        if self.align:
            self.align.load_state_dict(state["align"])


RULES = {  # ssl.method -> its threshold rule, from (ssl, classes, unlabeled positions, training images, device)
    "fixmatch": lambda ssl, classes, unlabeled, n_images, device: FixedThreshold(ssl.threshold),
    "flexmatch": lambda ssl, classes, unlabeled, n_images, device: FlexMatchThreshold(
        ssl.threshold, classes, unlabeled, n_images, device),
    "freematch": lambda ssl, classes, unlabeled, n_images, device: FreeMatchThreshold(classes, ssl.stats_ema, device),
}


def build(ssl, classes: int, unlabeled, n_images: int, device) -> PseudoLabels:
    """The pseudo-labelling of a run whose ssl.method is in RULES, its statistics at their starting values."""
    align = DistAlign(classes, ssl.stats_ema, device) if ssl.dist_align else None
    return PseudoLabels(RULES[ssl.method](ssl, classes, unlabeled, n_images, device), align)
