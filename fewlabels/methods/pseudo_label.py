"""Pseudo-labelling (Lee 2013): the model trains on its own confident predictions (hard labels) for a weak view
of the unlabeled batch, with gradients through both."""
from fewlabels.methods import base


class Method(base.Method):
    def loss(self, student, x, views, teacher, index):
        logits = student(views.weak(x))
        confidence, targets = logits.detach().float().softmax(1).max(1)
        keep = (confidence >= self.ssl.threshold).float()
        self.give(index, targets, keep)
        return base.masked_ce(logits, targets, keep)
