"""FixMatch (Sohn et al. 2020): the teacher's predictions on a weak view of an unlabeled batch become the targets
of a strong view where they are confident enough (at least ssl.threshold); optionally after distribution
alignment.

The teacher is the model itself (its dropout off), or its weight average when train.ema and ssl.ema_teacher are
on; its weak view is train.augment without cutout (augment.TEACHER). The code is
fewlabels.methods.base.ThresholdMethod, which FlexMatch and FreeMatch share (they differ only in which
predictions count: `mask`); this module is what `ssl.method: fixmatch` trains with, so its train stages alone
depend on it.
"""
from fewlabels.methods import base


class Method(base.ThresholdMethod):
    """A prediction counts when its confidence reaches ssl.threshold, whatever its class."""
