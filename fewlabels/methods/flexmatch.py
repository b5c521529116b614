"""FlexMatch (Zhang et al. 2021): FixMatch with class-wise curriculum thresholds, as USB's (semilearn/algorithms/
flexmatch/utils.py) with its defaults: threshold warm-up on, convex mapping.

Every unlabeled image remembers the class of its latest prediction confident beyond ssl.threshold (-1: none yet).
A class's learning effect beta_c is the number of images holding it over the largest such number, counting the
images not yet selected as one more group (the warm-up). Its threshold is threshold x beta_c / (2 - beta_c): 0 for
every class before any image is selected, low for the classes the model rarely predicts confidently, the full
threshold for the best-learnt one. A batch is masked with the thresholds from before it, then recorded.

Deviation: USB leaves the effects unchanged when every unlabeled image holds the same value; here they are
recomputed (the same zeros when none is selected; a model confident about one class only for every image gets
that class 1, the others 0).
"""
import torch

from fewlabels.methods import base


class Method(base.ThresholdMethod):
    STATE = ("selected",)

    def __init__(self, ssl, run: base.Run):
        super().__init__(ssl, run)
        self.n_classes = run.classes
        unlabeled = torch.as_tensor(run.unlabeled, dtype=torch.int64, device=run.device)
        # each training position's row in `selected` (-1 for labeled images, which never come here)
        self.row = torch.full((run.n_images,), -1, dtype=torch.int64, device=run.device)
        self.row[unlabeled] = torch.arange(len(unlabeled), device=run.device)
        self.selected = torch.full((len(unlabeled),), -1, dtype=torch.int64, device=run.device)

    def learning_effect(self) -> torch.Tensor:
        counts = torch.bincount(self.selected + 1, minlength=self.n_classes + 1)  # [not yet selected, class 0, ...]
        return counts[1:].float() / counts.max()

    def thresholds(self) -> torch.Tensor:
        beta = self.learning_effect()
        return self.ssl.threshold * beta / (2 - beta)

    def update(self, probs: torch.Tensor, index: torch.Tensor) -> None:
        confidence, predicted = probs.max(1)
        rows = self.row[index]
        self.selected[rows] = torch.where(confidence >= self.ssl.threshold, predicted, self.selected[rows])

    def mask(self, probs, index, everyone):
        confidence, predicted = probs.max(1)
        keep = (confidence >= self.thresholds()[predicted]).float()
        self.update(*everyone)
        return keep
