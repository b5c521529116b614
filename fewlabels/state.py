"""What changes while a model trains: TrainState, which is also exactly what a resume checkpoint holds."""
from dataclasses import dataclass, field

import torch
from torch.optim.swa_utils import AveragedModel

from fewlabels import checkpoint, distributed
from fewlabels.distributed import Dist
from fewlabels.methods.base import Method

ROW = {**checkpoint.HISTORY_ROW, "seconds": float}  # one finished epoch: the model file's row and its duration
COUNTER_TYPES = {"epoch": (int,), "history": (list,), "best_epoch": (int,), "best_score": (float, type(None)),
                 "stale": (int,), "stopped": (bool,), "images_seen": (int,), "train_seconds": (float,)}


@dataclass
class TrainState:
    """With it and the run's settings, training continues as if it had never stopped (state_dict /
    load_state_dict); check_saved refuses a saved state that this run's state_dict could not have written."""
    model: torch.nn.Module    # the model itself (what is saved)
    net: torch.nn.Module      # what trains: the model, or its DistributedDataParallel wrapper
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: object | None  # a torch lr scheduler, or None
    method: Method            # the semi-supervised method, with its running statistics (thresholds)
    epoch: int = 0            # epochs finished
    history: list = field(default_factory=list)  # one ROW per finished epoch
    best_epoch: int = 0
    best_state: dict | None = None  # state_dict of the scored module at best_epoch
    best_score: float | None = None
    stale: int = 0            # epochs since valid loss last improved
    stopped: bool = False     # early stopping (or the caller) ended training before cfg.epochs
    images_seen: int = 0      # labeled images trained on
    train_seconds: float = 0.0

    @property
    def scored(self) -> torch.nn.Module:
        """What is validated, checkpointed and saved: the weight average when train.ema is on."""
        return self.ema.module if self.ema else self.model

    def _parts(self) -> dict:
        """The saved parts that are modules or torch objects, as their fresh state_dicts."""
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "method": self.method.state_dict()}

    def state_dict(self, dist: Dist, device: torch.device) -> dict:
        """Every rank takes part (the RNG states are gathered); rank 0's copy is the one to save."""
        return {**self._parts(), "counters": {name: getattr(self, name) for name in COUNTER_TYPES},
                "best_state": self.best_state,
                # each rank's: augmentation and dropout draw from these; the sampler reshuffles from (seed, epoch)
                "rng": distributed.gather(_rng(device), dist, device)}

    def check_saved(self, saved: dict, epochs: int, world_size: int, device: torch.device) -> None:
        """checkpoint.Mismatch unless `saved` (read from a resume file) is what state_dict() of this run
        writes after 1 to `epochs` epochs: the same keys and types, tensors shaped as this run's."""
        parts = self._parts()
        checkpoint.check_keys(saved, {*parts, "counters", "best_state", "rng"}, "it")
        for name, fresh in parts.items():
            if name == "optimizer":
                _check_optimizer(saved[name], self.optimizer)
            else:
                checkpoint.check_like(saved[name], fresh, name)
        counters = saved["counters"]
        checkpoint.check_keys(counters, set(COUNTER_TYPES), "counters")
        for name, kinds in COUNTER_TYPES.items():
            if type(counters[name]) not in kinds:
                raise checkpoint.Mismatch(f"counters.{name} is {type(counters[name]).__name__}, not {kinds[0].__name__}")
        epoch = counters["epoch"]
        if not 1 <= epoch <= epochs or not 1 <= counters["best_epoch"] <= epoch:
            raise checkpoint.Mismatch(f"counters: epoch {epoch}, best epoch {counters['best_epoch']}: not within "
                                      f"this run's {epochs} epochs")
        checkpoint.check_history(counters["history"], ROW, epochs, "counters.history")
        if len(counters["history"]) != epoch:
            raise checkpoint.Mismatch(f"counters.history has {len(counters['history'])} rows for {epoch} epochs")
        checkpoint.check_like(saved["best_state"], self.scored.state_dict(), "best_state")
        checkpoint.check_values(saved["model"], "model")
        checkpoint.check_values(saved["best_state"], "best_state")
        checkpoint.check_like(saved["rng"], [_rng(device)] * world_size, "rng")

    def load_state_dict(self, state: dict, rank: int) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        self.method.load_state_dict(state["method"])
        for name, value in state["counters"].items():
            setattr(self, name, value)
        self.best_state = state["best_state"]
        rng = state["rng"][rank]
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state_all(rng["cuda"])
        if rng["mps"] is not None:
            torch.mps.set_rng_state(rng["mps"])


def _rng(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "mps": torch.mps.get_rng_state() if device.type == "mps" else None}


def _check_optimizer(saved, optimizer: torch.optim.Optimizer) -> None:
    """checkpoint.Mismatch unless `saved` is a state_dict of `optimizer`: its param groups, and per parameter
    a step count and buffers (momentum, Adam's averages) shaped as the parameter."""
    fresh = optimizer.state_dict()
    checkpoint.check_keys(saved, fresh.keys(), "optimizer")
    checkpoint.check_like(saved["param_groups"], fresh["param_groups"], "optimizer.param_groups")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = saved["state"]
    if not isinstance(state, dict) or not set(state) <= set(range(len(params))):
        raise checkpoint.Mismatch("optimizer.state does not map this model's parameters")
    for i, entry in state.items():
        if not isinstance(entry, dict):
            raise checkpoint.Mismatch(f"optimizer.state[{i}] is not a mapping")
        for key, value in entry.items():
            scalar = isinstance(value, torch.Tensor) and value.numel() == 1 and value.ndim == 0
            if not scalar:
                checkpoint.check_like(value, params[i].detach(), f"optimizer.state[{i}].{str(key)[:20]}")
