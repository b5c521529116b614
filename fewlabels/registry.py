"""The names settings pick code by (train.optimizer, train.scheduler, train.augment, ssl.strong, models), each
with its meaning, and the module that defines the code under that very name.

Torch-free: the params schema takes its choices from here, and the params table their meanings, without
importing torch; `REGISTRY[name]` imports the module when a stage uses the code. A new model, optimizer,
schedule or augmentation is a function in its module and a line here. (Semi-supervised methods, which carry
more, have their own registry: fewlabels.methods.)
"""
import importlib
from collections.abc import Mapping


class Registry(Mapping):
    """name -> the attribute of that name in `module`; iterates over the names in declaration order."""

    def __init__(self, module: str, meanings: dict[str, str]):
        self.module, self.meanings = module, meanings

    def __getitem__(self, name: str):
        if name not in self.meanings:
            raise KeyError(name)
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


MODELS = Registry("fewlabels.models", {  # builders (channels, size, n_classes, name) -> nn.Module
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
