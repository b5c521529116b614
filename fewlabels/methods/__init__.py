"""The semi-supervised methods: what an unlabeled batch teaches (params.yaml `ssl.method`).

A method is one module of this package, named as the method, holding a class `Method` (a subclass of
fewlabels.methods.base.Method): its running state, which the resume checkpoint saves, and its loss on an
unlabeled batch. Plus one line of METHODS below, what the params schema knows of it without importing torch:
its meaning for the params table and the settings it needs. Adding a method is a module and a line here;
tests/test_methods.py runs every method of METHODS through the same checks (it trains, never sees a hidden
label, resumes exactly).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    meaning: str                # the params table's words for it
    # False: unlabeled batches teach nothing: each is drawn once an epoch, whatever ssl.unlabeled_ratio
    learns: bool = True
    dist_align: bool = False    # ssl.dist_align applies: the teacher's probabilities pass through it
    needs_average: bool = False  # learns from the weight average: train.ema on and ssl.ema_teacher true


METHODS = {  # ssl.method -> its Spec; the code is fewlabels/methods/<name>.py
    "skip": Spec("unlabeled batches ignored, as in the notebooks", learns=False),
    "pseudo_label": Spec("the model's own confident predictions"),
    "fixmatch": Spec("a weak view's confident class for a strong view", dist_align=True),
    "mean_teacher": Spec("match the weight average, needs train.ema", needs_average=True),
    "flexmatch": Spec("fixmatch, class-wise curriculum thresholds", dist_align=True),
    "freematch": Spec("fixmatch, self-adaptive thresholds"),
    "label_propagation": Spec("labels diffused over a kNN graph of the model's embeddings, before each epoch"),
}


def conflict(method: str, ema: float, ema_teacher: bool, dist_align: bool) -> str | None:
    """Why these settings cannot train together (one line naming the fix), or None."""
    spec = METHODS[method]
    if spec.needs_average and not ema:
        return f"ssl.method {method} needs a teacher: set train.ema to a decay such as 0.99"
    if spec.needs_average and not ema_teacher:
        return f"ssl.method {method} learns from the weight average: set ssl.ema_teacher to true"
    if dist_align and not spec.dist_align:
        aligned = " or ".join(name for name, s in METHODS.items() if s.dist_align)
        return f"ssl.dist_align works with ssl.method {aligned}, not {method}: set ssl.dist_align to false"
    return None
