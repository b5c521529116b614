"""The names settings pick code by (models, train.optimizer, train.scheduler, train.augment, ssl.strong,
ssl.method), each with its meaning, and where the code under that name is.

Torch-free and code-free: the params schema takes its choices from here, and the params table their
meanings, without importing torch or any model or method; `REGISTRY[name]` imports the code when a stage
uses it. So editing a model (fewlabels/models/<name>.py) or a method (fewlabels/methods/<name>.py) touches
only the train and evaluate stages that use it (dvc.yaml names those files by ${item.model} and
${ssl.method}), never a data stage. A new model or method is a module and a line here; a new optimizer,
schedule or augmentation a function in its module and a line here.
"""
import importlib
from collections.abc import Mapping
from dataclasses import dataclass


class Registry(Mapping):
    """name -> the attribute of that name in `module`, or with `per_name`, the attribute `per_name` of module
    `<module>.<name>` (a module of its own per choice); iterates over the names in declaration order."""

    def __init__(self, module: str, meanings: dict[str, str], per_name: str = ""):
        self.module, self.meanings, self.per_name = module, meanings, per_name

    def __getitem__(self, name: str):
        if name not in self.meanings:
            raise KeyError(name)
        if self.per_name:
            return getattr(importlib.import_module(f"{self.module}.{name}"), self.per_name)
        return getattr(importlib.import_module(self.module), name)

    def __contains__(self, name) -> bool:  # without importing the module
        return name in self.meanings

    def __iter__(self):
        return iter(self.meanings)

    def __len__(self) -> int:
        return len(self.meanings)

    def describe(self) -> str:
        """'a (its meaning), b (...)': for the params table."""
        return ", ".join(f"{name} ({meaning})" if meaning else name for name, meaning in self.meanings.items())


MODELS = Registry("fewlabels.models", per_name="build", meanings={  # fewlabels/models/<name>.py: build(channels, size, n_classes)
    "cnn": "conv32-conv64 (3x3), max-pool, dropout 0.25, fc128",
    "adaptive_cnn": "cnn with adaptive average pooling to 12x12 (any image size)",
    "simple_cnn": "cnn without dropout",
    "bn_cnn": "three conv blocks 32-64-128 with batch norm, dropout, fc128",
    "lenet": "conv20-conv40 (5x5, unpadded), fc 240-120-84",
    "cifar_relu": "conv10-conv20-conv48 (3x3, unpadded), fc100, ReLU",
    "cifar_tanh": "cifar_relu with tanh",
    "bn_small": "three conv blocks 16-32-64 with batch norm, no hidden fc (found by bench/ for speed)",
    "bn_wide": "bn_small 32-64-128 wide",
    "vgg_bn": "VGG-style: two 3x3 conv + batch norm per width 64-128-256, max-pools, global average pool, dropout, "
              "linear (for the semi-supervised recipes; sized for a GPU)",
})
OPTIMIZERS = Registry("fewlabels.optim", {  # (parameters, TrainConfig) -> torch optimizer
    "adam": "",
    "sgd": "with train.momentum",
})
SCHEDULERS = Registry("fewlabels.optim", {  # (optimizer, TrainConfig, steps an epoch) -> (scheduler, when it steps)
    "none": "",
    "step": "divide by 10 at train.step_milestones",
    "plateau": "divide by 10 when valid loss stalls",
    "onecycle": "",
    "cosine": "FixMatch's: lr x cos(7 pi k / 16 K) at step k of K",
})
AUGMENTS = Registry("fewlabels.augment", {  # uint8-derived normalised batch -> augmented batch
    "none": "",
    "crop": "shift up to 2 px",
    "flip_crop": "also mirror, not for digits",
    "flip_crop_cutout": "also hide an 8x8 square",
})
STRONG_VIEWS = Registry("fewlabels.augment", {  # (weak policy, mean, std on the [0, 1] scale) -> the strong view
    "affine_jitter_cutout": "rotation, shear, zoom, brightness/contrast jitter, cutout",
    "randaugment": "3 of USB's grayscale ops, grey cutout",
})


@dataclass(frozen=True)
class Spec:
    """What the params schema knows of a semi-supervised method (fewlabels/methods/<name>.py, class Method)."""
    meaning: str                # the params table's words for it
    # False: unlabeled batches teach nothing: each is drawn once an epoch, whatever ssl.unlabeled_ratio
    learns: bool = True
    dist_align: bool = False    # ssl.dist_align applies: the teacher's probabilities pass through it
    needs_average: bool = False  # learns from the weight average: train.ema on and ssl.ema_teacher true


METHODS = {  # ssl.method -> its Spec; the code is class Method of fewlabels/methods/<name>.py
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
