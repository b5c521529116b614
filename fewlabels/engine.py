"""The training engine: fit a model on pure labeled/unlabeled batches and evaluate it.

Images stay uint8 until the step: normalisation happens per batch on the training device.
Loss and accuracy accumulate on the device, so the hot loop never waits for the host.
"""
import copy
import functools
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from torch.nn.parallel import DistributedDataParallel

from fewlabels import augment, checkpoint, distributed, pseudolabels
from fewlabels.data import InMemoryImages, PureBatchSampler, collate_pure, one_pass_batches, rank_seed
from fewlabels.distributed import Dist
from fewlabels.errors import ParamError
from fewlabels.inference import Normalize, autocast, channel_stats, loss_and_accuracy, predict, resolve_device
from fewlabels.params import SSLConfig, TrainConfig

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


def ramp(ssl: SSLConfig, epoch: int) -> float:
    """Unlabeled loss weight at `epoch` (1-based): 0 at the start of warm-up, ssl.weight after it."""
    if ssl.warmup_epochs == 0:
        return ssl.weight
    return ssl.weight * min(1.0, (epoch - 1) / ssl.warmup_epochs)


def skip_unlabeled(model, x, ssl: SSLConfig, views, teacher, pseudo, index) -> torch.Tensor | None:
    """ssl.method 'skip': unlabeled batches teach nothing (the notebooks' behaviour)."""
    return None


def _masked_ce(logits, targets, keep):
    """Cross-entropy on the kept predictions only (keep: 1.0 or 0.0), averaged over the whole batch (FixMatch's form)."""
    return (F.cross_entropy(logits.float(), targets, reduction="none") * keep).mean()


def pseudo_label(model, x, ssl: SSLConfig, views, teacher, pseudo, index) -> torch.Tensor:
    """Train on the model's own confident predictions (hard labels) for the unlabeled batch."""
    logits = model(views.weak(x))
    confidence, targets = logits.detach().float().softmax(1).max(1)
    return _masked_ce(logits, targets, (confidence >= ssl.threshold).float())


@contextmanager
def frozen_bn_stats(model):
    """Batch norm still normalises with the batch's own statistics but leaves its running averages alone:
    strongly augmented views must not shift the statistics that test images are normalised with."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - momentum) * running + momentum * batch
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def _teacher_weak_student_strong(model, x, views, teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """(the teacher's class probabilities on a weak view, no gradient; the student's logits on a strong view)."""
    with torch.no_grad():
        target = teacher(views.weak(x)).float().softmax(1)
    with frozen_bn_stats(model):
        return target, model(views.strong(x)).float()


def fixmatch(model, x, ssl: SSLConfig, views, teacher, pseudo, index) -> torch.Tensor:
    """FixMatch, and FlexMatch with its class-wise thresholds: the teacher's predictions on a weak view become the
    targets of a strong view where the method's threshold rule keeps them (`pseudo`: fewlabels.pseudolabels).

    The teacher is the model itself, or its weight average when train.ema and ssl.ema_teacher are on.
    """
    probs, logits = _teacher_weak_student_strong(model, x, views, teacher)
    targets, keep = pseudo.select(probs, index)
    return _masked_ce(logits, targets, keep)


def freematch(model, x, ssl: SSLConfig, views, teacher, pseudo, index) -> torch.Tensor:
    """FreeMatch: FixMatch's loss under self-adaptive thresholds, plus ssl.fairness_weight x its fairness loss."""
    probs, logits = _teacher_weak_student_strong(model, x, views, teacher)
    targets, keep = pseudo.select(probs, index)
    fairness = pseudolabels.fairness_loss(logits, keep, pseudo.rule.p_model, pseudo.rule.label_hist)
    return _masked_ce(logits, targets, keep) + ssl.fairness_weight * fairness


def mean_teacher(model, x, ssl: SSLConfig, views, teacher, pseudo, index) -> torch.Tensor:
    """Mean teacher: the student's class probabilities on a strong view match the weight-averaged
    teacher's on a weak view (squared error summed over classes; no threshold)."""
    target, logits = _teacher_weak_student_strong(model, x, views, teacher)
    return (logits.softmax(1) - target).pow(2).sum(1).mean()


# ssl.method -> objective(model, normalised unlabeled images, SSLConfig, augment.Views, teacher,
# pseudo-labelling state (pseudolabels.PseudoLabels, for the methods in pseudolabels.RULES, else None),
# the images' positions in the training set) -> loss or None.
# No objective ever receives labels: unlabeled batches carry none.
UNLABELED_OBJECTIVES = {"skip": skip_unlabeled, "pseudo_label": pseudo_label, "fixmatch": fixmatch,
                        "mean_teacher": mean_teacher, "flexmatch": fixmatch, "freematch": freematch}


@dataclass
class TrainState:
    """What changes while training, and exactly what a resume checkpoint holds (state_dict / load_state_dict):
    with it and the run's settings, training continues as if it had never stopped."""
    model: torch.nn.Module    # the model itself (what is saved)
    net: torch.nn.Module      # what trains: the model, or its DistributedDataParallel wrapper
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: object | None  # a torch lr scheduler, or None
    pseudo: pseudolabels.PseudoLabels | None = None  # running statistics of the pseudo-labelling (thresholds)
    epoch: int = 0            # epochs finished
    history: list = field(default_factory=list)  # one row per finished epoch
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

    def state_dict(self, dist: Dist, device: torch.device) -> dict:
        """Every rank takes part (the RNG states are gathered); rank 0's copy is the one to save."""
        cuda = device.type == "cuda"
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else None}
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "pseudo": self.pseudo.state_dict() if self.pseudo else None,
            "counters": {name: getattr(self, name) for name in _COUNTERS},
            "best_state": self.best_state,
            # each rank's: augmentation and dropout draw from these; the sampler reshuffles from (seed, epoch) alone
            "rng": distributed.gather(rng, dist, device),
        }

    def check_saved(self, saved: dict, epochs: int, world_size: int, device: torch.device) -> None:
        """checkpoint.Mismatch unless `saved` (read from a resume file) is what state_dict() of this run
        writes after 1 to `epochs` epochs: the same keys and types, tensors shaped as this run's."""
        like = checkpoint.check_like
        checkpoint.check_keys(saved, set(_SAVED), "it")
        like(saved["model"], self.model.state_dict(), "model")
        like(saved["ema"], self.ema.state_dict() if self.ema else None, "ema")
        _check_optimizer(saved["optimizer"], self.optimizer)
        like(saved["scheduler"], self.scheduler.state_dict() if self.scheduler else None, "scheduler")
        like(saved["pseudo"], self.pseudo.state_dict() if self.pseudo else None, "pseudo")
        counters = saved["counters"]
        checkpoint.check_keys(counters, set(_COUNTERS), "counters")
        for name, kinds in _COUNTER_TYPES.items():
            if type(counters[name]) not in kinds:
                raise checkpoint.Mismatch(f"counters.{name} is {type(counters[name]).__name__}, not {kinds[0].__name__}")
        epoch = counters["epoch"]
        if not 1 <= epoch <= epochs or not 1 <= counters["best_epoch"] <= epoch:
            raise checkpoint.Mismatch(f"counters: epoch {epoch}, best epoch {counters['best_epoch']}: not within "
                                      f"this run's {epochs} epochs")
        checkpoint.check_history(counters["history"], _ROW, epochs, "counters.history")
        if len(counters["history"]) != epoch:
            raise checkpoint.Mismatch(f"counters.history has {len(counters['history'])} rows for {epoch} epochs")
        like(saved["best_state"], self.scored.state_dict(), "best_state")
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}
        like(saved["rng"], [rng] * world_size, "rng")

    def load_state_dict(self, state: dict, rank: int) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.pseudo:
            self.pseudo.load_state_dict(state["pseudo"])
        for name, value in state["counters"].items():
            setattr(self, name, value)
        self.best_state = state["best_state"]
        rng = state["rng"][rank]
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state_all(rng["cuda"])


_COUNTERS = ("epoch", "history", "best_epoch", "best_score", "stale", "stopped", "images_seen", "train_seconds")
_SAVED = ("model", "ema", "optimizer", "scheduler", "pseudo", "counters", "best_state", "rng")  # state_dict()'s keys
_COUNTER_TYPES = {"epoch": (int,), "best_epoch": (int,), "best_score": (float, type(None)), "stale": (int,),
                  "stopped": (bool,), "images_seen": (int,), "train_seconds": (float,)}
_ROW = {"epoch": int, "train_loss": float, "train_acc": float, "valid_loss": float, "valid_acc": float, "lr": float,
        "seconds": float}  # fit()'s history row


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


@dataclass(frozen=True)
class Loop:
    """What stays fixed for one run: the data path and the settings an epoch needs."""
    loader: DataLoader
    sampler: PureBatchSampler
    prep: object        # uint8 images on the device -> normalised float in the run's memory layout
    views: augment.Views  # the weak augmentation policy, and the strong view of unlabeled batches
    cfg: TrainConfig
    ssl: SSLConfig
    device: torch.device
    sched_when: str | None  # when the scheduler steps: 'batch' | 'epoch' | 'valid_loss' | None
    unlabeled_share: float  # unlabeled batches per labeled batch (>= 1)
    dist: Dist              # this process's rank among the run's processes


def _train_epoch(state: TrainState, loop: Loop, epoch: int) -> tuple[float, float, int]:
    """One pass over the sampler's batches; returns (train loss, train accuracy, labeled images seen).

    One optimizer step per labeled batch: the gradients of the unlabeled batches since the previous
    step join it, each weighted 1/unlabeled_share (unlabeled batches per labeled batch), so a step
    minimises labeled loss + weight x mean unlabeled loss, as FixMatch does with mixed batches.
    Loss and accuracy accumulate on the device: the only host synchronisation is at the end.
    """
    net, cfg, ssl, device = state.net, loop.cfg, loop.ssl, loop.device
    unlabeled_loss = UNLABELED_OBJECTIVES[ssl.method]
    unlabeled_weight = ramp(ssl, epoch) / loop.unlabeled_share
    # never the DDP wrapper: its forward is a collective, the teacher's need not be
    teacher = state.scored if ssl.ema_teacher else state.model
    net.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen, pending = 0, False  # pending: unlabeled gradients waiting for the next step
    state.optimizer.zero_grad(set_to_none=True)
    # disable=None: a bar on a terminal only; logs in files keep just the epoch line
    for batch in tqdm(loop.loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, mininterval=1.0, disable=None):
        if not batch.labeled:
            if unlabeled_weight == 0:
                continue
            with autocast(device, cfg.amp):
                loss = unlabeled_loss(net, loop.prep(batch.x), ssl, loop.views, teacher, state.pseudo, batch.index)
            if loss is not None:
                (unlabeled_weight * loss).backward()
                pending = True
            continue
        with autocast(device, cfg.amp):
            logits = net(loop.views.weak(loop.prep(batch.x)))
        loss = F.cross_entropy(logits.float(), batch.y, label_smoothing=cfg.label_smoothing)
        loss.backward()
        _step(state)
        pending = False
        if loop.sched_when == "batch":
            state.scheduler.step()
        loss_sum += loss.detach() * len(batch.y)
        correct += (logits.argmax(1) == batch.y).sum()
        seen += len(batch.y)
    if pending:  # unlabeled batches after the epoch's last labeled one (or an epoch with no labels)
        _step(state)
    if loop.dist.world_size > 1:  # every rank's share of the epoch
        totals = distributed.all_sum(torch.stack([loss_sum.double(), correct.double(),
                                                  torch.tensor(seen, dtype=torch.float64, device=device)]), loop.dist)
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
    return (loss_sum / max(seen, 1)).item(), correct.item() / max(seen, 1), seen


def _step(state: TrainState) -> None:
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema:
        state.ema.update_parameters(state.model)


def _end_epoch(state: TrainState, loop: Loop, row: dict, stop: bool) -> None:
    """After an epoch's validation: step the epoch schedulers, keep the best checkpoint, early stopping."""
    cfg = loop.cfg
    if loop.sched_when == "epoch":
        state.scheduler.step()
    elif loop.sched_when == "valid_loss":
        state.scheduler.step(row["valid_loss"])
    score = row["valid_acc"] if cfg.select_metric == "valid_acc" else -row["valid_loss"]
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_epoch = score, row["epoch"]
        state.best_state = copy.deepcopy(state.scored.state_dict())
    # Early stopping watches valid loss whatever metric picks the checkpoint.
    state.stale = 0 if row["valid_loss"] <= min(r["valid_loss"] for r in state.history) else state.stale + 1
    if state.stale >= cfg.patience and not stop:
        print(f"early stop: valid loss has not improved for {cfg.patience} epochs")
    state.stopped = stop or state.stale >= cfg.patience


def fit(model, train_images, train_labels, labeled, unlabeled, valid_images, valid_labels,
        cfg: TrainConfig, seed: int, ssl: SSLConfig = SSLConfig(), log_epoch=None,
        resume: dict | None = None, save_state=None, dist: Dist = Dist()) -> dict:
    """Train `model`; return the best state_dict (by cfg.select_metric) and the per-epoch history.

    train_labels must already be masked (fewlabels.data.mask_labels): the engine never sees the
    label of an unlabeled index. `log_epoch(row, scored)` is called with each epoch's metrics and the
    module they scored (`model`, or its weight average when cfg.ema is on); returning True stops training.
    A resumed run first replays the finished epochs' rows (scored None, the return value ignored).
    `save_state(state_dict)` is called after every epoch with what `resume` takes to continue from there
    exactly (TrainState.state_dict()): the same final weights as a run that never stopped.

    Distributed (`dist.world_size` > 1, every rank calling fit with the same arguments): the ranks train on
    their shares of each global batch in lockstep (PureBatchSampler) with DistributedDataParallel; batch
    norm is SyncBatchNorm on CUDA, so its statistics are the whole global batch's as in one process (torch
    has no CPU SyncBatchNorm: with gloo each rank normalises by its share, and DDP copies rank 0's running
    statistics to every rank before each forward pass). Rank 0 alone validates (the same numbers as one
    process on the same weights), calls log_epoch and save_state, and hands its results to the others;
    `resume` is read from rank 0.
    """
    if ssl.method == "mean_teacher" and not cfg.ema:
        raise ParamError("ssl.method mean_teacher needs a teacher: set train.ema to a decay such as 0.99")
    device = resolve_device(cfg.device)
    distributed.init(dist, device)
    torch.manual_seed(seed)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    net = model
    if dist.world_size > 1:
        if device.type == "cuda":
            model = net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(rank_seed(seed, dist.rank))  # DDP copied rank 0's weights; from here each rank draws its own
    mean, std = channel_stats(train_images)
    normalize = Normalize(mean, std).to(device)

    def prep(x):
        return normalize(x).contiguous(memory_format=layout)

    dataset = InMemoryImages(train_images.to(device), train_labels.to(device))
    # the step budget: as many optimizer steps an epoch at every labeled_frac (by default, one pass over the
    # train split's worth; at labeled_frac 1.0 exactly today's one pass over the labeled images)
    steps = cfg.epoch_steps or one_pass_batches(len(train_images), cfg.batch_size, dist.world_size)
    sampler = PureBatchSampler(labeled, unlabeled, cfg.batch_size, seed, device=device,
                               unlabeled_per_labeled=None if ssl.method == "skip" else ssl.unlabeled_ratio,
                               rank=dist.rank, world_size=dist.world_size, labeled_batches=steps)
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    scheduler, sched_when = SCHEDULERS[cfg.scheduler](optimizer, cfg, sampler.n_batches(True))
    # The averaged copy also averages batch-norm statistics (use_buffers), so it is ready to evaluate.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    if ema:
        ema.eval()  # as a teacher too: no dropout, and batch norm keeps its averaged statistics
    weak = augment.POLICIES[cfg.augment]
    views = augment.Views(weak, augment.STRONG[ssl.strong](weak, normalize.mean / 255, normalize.std / 255))
    loop = Loop(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_pure), sampler, prep, views,
                cfg, ssl, device, sched_when,
                unlabeled_share=max(1.0, sampler.n_batches(False) / max(1, sampler.n_batches(True))), dist=dist)
    pseudo = None
    if ssl.method in pseudolabels.RULES:
        classes = predict(model, prep, train_images[:1], device, amp=False).shape[1]  # eval mode: changes nothing
        pseudo = pseudolabels.build(ssl, classes, unlabeled, len(train_images), device)
        if dist.world_size > 1:  # every rank updates the statistics with the whole global batch: they stay equal
            pseudo.gather = functools.partial(distributed.all_gather_rows, dist)
    state = TrainState(model, net, ema, optimizer, scheduler, pseudo)
    resume = distributed.broadcast(resume, dist, device)
    if resume is not None:
        state.check_saved(resume, cfg.epochs, dist.world_size, device)
        state.load_state_dict(resume, dist.rank)
        if dist.main:
            print(f"resuming after epoch {state.epoch}/{cfg.epochs}", flush=True)
            for row in state.history if log_epoch else []:  # the caller's curves: as if never stopped
                log_epoch(row, None)
    valid_labels = valid_labels.to(device)

    while not state.stopped and state.epoch < cfg.epochs:
        epoch = state.epoch + 1
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        train_loss, train_acc, n = _train_epoch(state, loop, epoch)
        epoch_seconds = time.perf_counter() - start  # _train_epoch's .item() waited for the device
        row, stop = None, False
        if dist.main:
            valid_loss, valid_acc = loss_and_accuracy(predict(state.scored, prep, valid_images, device, cfg.amp),
                                                      valid_labels)
            lr = optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "valid_loss": valid_loss,
                   "valid_acc": valid_acc, "lr": lr, "seconds": epoch_seconds}
            print(f"epoch {epoch:>3}/{cfg.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                  f"valid loss {valid_loss:.4f} acc {valid_acc:.4f}  lr {lr:.2e}  {epoch_seconds:.1f}s  "
                  f"({device.type}{f' x{dist.world_size}' if dist.world_size > 1 else ''})", flush=True)
            stop = bool(log_epoch(row, state.scored)) if log_epoch else False
        row, stop = distributed.broadcast((row, stop), dist, device)
        state.history.append(row)
        state.epoch, state.images_seen, state.train_seconds = epoch, state.images_seen + n, state.train_seconds + epoch_seconds
        _end_epoch(state, loop, row, stop)
        if save_state or dist.world_size > 1:  # every rank takes part in gathering the state
            saved = state.state_dict(dist, device)
            if save_state:
                save_state(saved)

    return {
        "state_dict": {k: v.cpu() for k, v in state.best_state.items()},
        "best_epoch": state.best_epoch,
        "history": state.history,
        "epochs_run": len(state.history),
        "train_seconds": state.train_seconds,
        "images_per_s": state.images_seen / state.train_seconds if state.train_seconds else 0.0,
        "device": str(device),
        "world_size": dist.world_size,
        "mean": mean,
        "std": std,
    }
