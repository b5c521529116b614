"""The optimizers and learning-rate schedules train.optimizer and train.scheduler pick."""
import math

import torch

from fewlabels.params import TrainConfig

OPTIMIZERS = {  # train.optimizer -> the optimizer for a model's parameters
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov),
}


SCHEDULERS = {  # train.scheduler -> (opt, cfg, optimizer steps per epoch) -> (scheduler, when it steps)
    "none": lambda opt, cfg, steps: (None, None),
    # the notebooks: divide the learning rate by 10 after chosen epochs
    "step": lambda opt, cfg, steps: (
        torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.step_milestones), gamma=0.1), "epoch"),
    "plateau": lambda opt, cfg, steps: (
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=max(1, cfg.patience // 2)), "valid_loss"),
    "onecycle": lambda opt, cfg, steps: (
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * max(1, steps)), "batch"),
    # published FixMatch's: lr x cos(7 pi k / 16 K) after k of the run's K steps, so it ends at 0.2 lr, not 0
    "cosine": lambda opt, cfg, steps: (torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: math.cos(7 * math.pi * k / (16 * cfg.epochs * max(1, steps)))), "batch"),
}


def build(model: torch.nn.Module, cfg: TrainConfig, steps: int):
    """(optimizer, scheduler or None, when the scheduler steps: 'batch' | 'epoch' | 'valid_loss' | None) for
    `model` trained `steps` optimizer steps an epoch."""
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    return (optimizer, *SCHEDULERS[cfg.scheduler](optimizer, cfg, steps))
