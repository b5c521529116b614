"""The optimizers and learning-rate schedules train.optimizer and train.scheduler pick (fewlabels.registry)."""
import math

import torch

from fewlabels.params import TrainConfig
from fewlabels.registry import OPTIMIZERS, SCHEDULERS

# train.optimizer: (the model's parameters, TrainConfig) -> the optimizer


def adam(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def sgd(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


# train.scheduler: (optimizer, TrainConfig, optimizer steps per epoch) -> (scheduler, when it steps)

def none(opt, cfg: TrainConfig, steps: int):
    return None, None


def step(opt, cfg: TrainConfig, steps: int):
    """The notebooks': divide the learning rate by 10 after chosen epochs."""
    return torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.step_milestones), gamma=0.1), "epoch"


def plateau(opt, cfg: TrainConfig, steps: int):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=max(1, cfg.patience // 2)), "valid_loss"


def onecycle(opt, cfg: TrainConfig, steps: int):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * max(1, steps)), "batch"


def cosine(opt, cfg: TrainConfig, steps: int):
    """Published FixMatch's: lr x cos(7 pi k / 16 K) after k of the run's K steps, so it ends at 0.2 lr, not 0."""
    total = cfg.epochs * max(1, steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: math.cos(7 * math.pi * k / (16 * total))), "batch"


def build(model: torch.nn.Module, cfg: TrainConfig, steps: int):
    """(optimizer, scheduler or None, when the scheduler steps: 'batch' | 'epoch' | 'valid_loss' | None) for
    `model` trained `steps` optimizer steps an epoch."""
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    return (optimizer, *SCHEDULERS[cfg.scheduler](optimizer, cfg, steps))
