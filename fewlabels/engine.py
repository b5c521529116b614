"""The training engine: fit a model on pure labeled/unlabeled batches and validate it after every epoch.

fit() reads top to bottom: setup() builds the run (data path, optimizer, method, state), then each epoch is
train_epoch() (one optimizer step per labeled batch), validate() (rank 0) and end_epoch() (schedules, best
checkpoint, early stopping), then the resume checkpoint. Distributed training and resuming are thin layers:
DistributedDataParallel around the model and a broadcast of rank 0's results; a TrainState loaded before the
first epoch.

Images stay uint8 until the step: normalisation happens per batch on the training device.
Loss and accuracy accumulate on the device, so the hot loop never waits for the host.
"""
import copy
import functools
import importlib
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fewlabels import augment, distributed, optim, registry
from fewlabels.data import FitInputs, InMemoryImages, PureBatchSampler, collate_pure, one_pass_batches, rank_seed
from fewlabels.distributed import Dist
from fewlabels.errors import ParamError
from fewlabels.inference import Normalize, autocast, bf16, channel_stats, loss_and_accuracy, predict, resolve_device
from fewlabels.methods.base import Method, Run
from fewlabels.params import SSLConfig, TrainConfig
from fewlabels.state import ROW, TrainState


class Hooks(NamedTuple):
    """What the caller hears of a run, and where a resumed one starts."""
    # (row, scored module) after each epoch's validation (rank 0); returning True stops training. A resumed run
    # first replays the finished epochs' rows (scored None, the return value ignored).
    log_epoch: Callable | None = None
    # (TrainState.state_dict()) after every epoch (rank 0): what `resume` takes to continue exactly from there
    save_state: Callable | None = None
    resume: dict | None = None  # a saved TrainState.state_dict(), read by rank 0
    # (epoch, targets [N], weights [N]) after each epoch whose method labelled every training image at its
    # start (Method.pseudo_labels; rank 0): the caller, which knows the hidden labels, may score them
    pseudo_labels: Callable | None = None


@dataclass(frozen=True)
class Loop:
    """What stays fixed for one run: the data path and the settings an epoch needs."""
    loader: DataLoader
    sampler: PureBatchSampler
    prep: Callable        # uint8 images on the device -> normalised float in the run's memory layout
    views: augment.Views  # the weak augmentation policy, and the strong view of unlabeled batches
    cfg: TrainConfig
    ssl: SSLConfig
    device: torch.device
    sched_when: str | None  # when the scheduler steps: 'batch' | 'epoch' | 'valid_loss' | None
    unlabeled_share: float  # unlabeled batches per labeled batch (>= 1)
    dist: Dist              # this process's rank among the run's processes
    mean: list[float]     # the training images' channel means and stds (0-255 scale), saved with the model
    std: list[float]
    bf16: bool            # forward passes under bf16 autocast (inference.bf16); False: float32 throughout


def ramp(ssl: SSLConfig, epoch: int) -> float:
    """Unlabeled loss weight at `epoch` (1-based): 0 at the start of warm-up, ssl.weight after it."""
    if ssl.warmup_epochs == 0:
        return ssl.weight
    return ssl.weight * min(1.0, (epoch - 1) / ssl.warmup_epochs)


def uses_unlabeled(ssl: SSLConfig, epoch: int) -> bool:
    """Whether `epoch` trains on the unlabeled images (and the method relabels them at its start)."""
    return ramp(ssl, epoch) > 0


def build_method(ssl: SSLConfig, run: Run) -> Method:
    """The run's semi-supervised method: class Method of module fewlabels/methods/<ssl.method>.py."""
    return importlib.import_module(f"fewlabels.methods.{ssl.method}").Method(ssl, run)


def setup(model, data: FitInputs, cfg: TrainConfig, seed: int, ssl: SSLConfig, dist: Dist) -> tuple[TrainState, Loop]:
    """The run's fresh state and its fixed loop, every random draw from `seed` (rank 0's weights on every rank)."""
    conflict = registry.conflict(ssl.method, cfg.ema, ssl.ema_teacher, ssl.dist_align)
    if conflict:
        raise ParamError(conflict)
    device = resolve_device(cfg.device)
    distributed.init(dist, device)
    torch.manual_seed(seed)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = net = model.to(device, memory_format=layout)
    if dist.world_size > 1:
        if device.type == "cuda":
            model = net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(rank_seed(seed, dist.rank))  # DDP copied rank 0's weights; from here each rank draws its own
    mean, std = channel_stats(data.train_images)
    normalize = Normalize(mean, std).to(device)

    def prep(x):
        return normalize(x).contiguous(memory_format=layout)

    # the step budget: as many optimizer steps an epoch at every labeled_frac (by default, one pass over the
    # train split's worth; at labeled_frac 1.0 exactly one pass over the labeled images)
    steps = cfg.epoch_steps or one_pass_batches(len(data.train_images), cfg.batch_size, dist.world_size)
    learns = registry.METHODS[ssl.method].learns
    sampler = PureBatchSampler(data.labeled, data.unlabeled, cfg.batch_size, seed, device=device,
                               unlabeled_per_labeled=ssl.unlabeled_ratio if learns else None,
                               rank=dist.rank, world_size=dist.world_size, labeled_batches=steps)
    optimizer, scheduler, sched_when = optim.build(model, cfg, sampler.n_batches(True))
    # The averaged copy also averages batch-norm statistics (use_buffers), so it is ready to evaluate; as a
    # teacher too it stays in eval mode: no dropout, and batch norm keeps its averaged statistics.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True).eval() if cfg.ema else None
    weak = registry.AUGMENTS[cfg.augment]
    views = augment.Views(weak, registry.STRONG_VIEWS[ssl.strong](weak, normalize.mean / 255, normalize.std / 255),
                          augment.TEACHER[cfg.augment])
    dataset = InMemoryImages(data.train_images.to(device), data.train_labels.to(device))
    loop = Loop(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_pure), sampler, prep, views,
                cfg, ssl, device, sched_when,
                unlabeled_share=max(1.0, sampler.n_batches(False) / max(1, sampler.n_batches(True))), dist=dist,
                mean=mean, std=std, bf16=bf16(device, cfg))
    classes = predict(model, prep, data.train_images[:1], device, amp=False).shape[1]  # eval mode: changes nothing
    # in a distributed run every rank updates the method's statistics with the whole global batch: they stay equal
    run = Run(classes, data.unlabeled, len(data.train_images), device, data.train_labels, bf16=loop.bf16)
    if dist.world_size > 1:
        run = run._replace(gather=functools.partial(distributed.all_gather_rows, dist))
    method = build_method(ssl, run)
    return TrainState(model, net, ema, optimizer, scheduler, method), loop


def train_epoch(state: TrainState, loop: Loop, epoch: int) -> tuple[float, float, int]:
    """One pass over the sampler's batches; returns (train loss, train accuracy, labeled images seen).

    One optimizer step per labeled batch: the gradients of the unlabeled batches since the previous
    step join it, each weighted 1/unlabeled_share (unlabeled batches per labeled batch), so a step
    minimises labeled loss + weight x mean unlabeled loss, as FixMatch does with mixed batches.
    Loss and accuracy accumulate on the device: the only host synchronisation is at the end.
    """
    net, cfg, device = state.net, loop.cfg, loop.device
    unlabeled_weight = ramp(loop.ssl, epoch) / loop.unlabeled_share
    # never the DDP wrapper: its forward is a collective, the teacher's need not be
    teacher = state.scored if loop.ssl.ema_teacher else state.model
    if uses_unlabeled(loop.ssl, epoch):
        state.method.start_epoch(teacher, loop.prep, loop.loader.dataset.images)
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
            with autocast(device, loop.bf16):
                loss = state.method.loss(net, loop.prep(batch.x), loop.views, teacher, batch.index)
            if loss is not None:
                (unlabeled_weight * loss).backward()
                pending = True
            continue
        with autocast(device, loop.bf16):
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


def validate(state: TrainState, loop: Loop, data: FitInputs, row: dict) -> dict:
    """`row` (the epoch's training figures) with the scored module's valid loss and accuracy and the learning
    rate; printed as the epoch's line."""
    device, dist = loop.device, loop.dist
    valid_loss, valid_acc = loss_and_accuracy(predict(state.scored, loop.prep, data.valid_images, device, loop.bf16),
                                              data.valid_labels.to(device))
    row |= {"valid_loss": valid_loss, "valid_acc": valid_acc, "lr": state.optimizer.param_groups[0]["lr"]}
    row = {key: row[key] for key in ROW}  # in the history's order
    print(f"epoch {row['epoch']:>3}/{loop.cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
          f"valid loss {valid_loss:.4f} acc {valid_acc:.4f}  lr {row['lr']:.2e}  {row['seconds']:.1f}s  "
          f"({device.type}{f' x{dist.world_size}' if dist.world_size > 1 else ''})", flush=True)
    return row


def end_epoch(state: TrainState, loop: Loop, row: dict, stop: bool) -> None:
    """After an epoch's validation: step the epoch schedulers, keep the best checkpoint, early stopping."""
    cfg = loop.cfg
    if loop.sched_when == "epoch":
        state.scheduler.step()
    elif loop.sched_when == "valid_loss":
        state.scheduler.step(row["valid_loss"])
    # higher is better; "last": every epoch beats the ones before it
    score = {"valid_acc": row["valid_acc"], "valid_loss": -row["valid_loss"], "last": float(row["epoch"])}[cfg.select_metric]
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_epoch = score, row["epoch"]
        state.best_state = copy.deepcopy(state.scored.state_dict())
    # Early stopping watches valid loss whatever metric picks the checkpoint; with "last" there is none: it would
    # keep the epoch it gave up on, before an annealed schedule (onecycle, cosine) reached its end.
    state.stale = 0 if row["valid_loss"] <= min(r["valid_loss"] for r in state.history) else state.stale + 1
    gave_up = cfg.select_metric != "last" and state.stale >= cfg.patience
    if gave_up and not stop:
        print(f"early stop: valid loss has not improved for {cfg.patience} epochs")
    state.stopped = stop or gave_up


def resume(state: TrainState, loop: Loop, hooks: Hooks) -> None:
    """Continue from rank 0's saved state, checked first (checkpoint.Mismatch); the caller's curves get the
    finished epochs' rows again, as if the run had never stopped."""
    saved = distributed.broadcast(hooks.resume, loop.dist, loop.device)
    if saved is None:
        return
    state.check_saved(saved, loop.cfg.epochs, loop.dist.world_size, loop.device)
    state.load_state_dict(saved, loop.dist.rank)
    if loop.dist.main:
        print(f"resuming after epoch {state.epoch}/{loop.cfg.epochs}", flush=True)
        for row in state.history if hooks.log_epoch else []:
            hooks.log_epoch(row, None)


def fit(model, data: FitInputs, cfg: TrainConfig, seed: int, ssl: SSLConfig = SSLConfig(), *,
        hooks: Hooks = Hooks(), dist: Dist = Dist()) -> dict:
    """Train `model` on `data` (fewlabels.data.fit_inputs); return the best state_dict (by cfg.select_metric),
    the per-epoch history and what the run took. (Seven arguments: the data, two settings sections, the seed,
    the caller's hooks and this process's place; each varies on its own.)

    data.train_labels must already be masked (fewlabels.data.mask_labels): the engine never sees the label of
    an unlabeled index. A run resumed from hooks.resume ends with the same weights as one that never stopped.

    Distributed (`dist.world_size` > 1, every rank calling fit with the same arguments): the ranks train on
    their shares of each global batch in lockstep (PureBatchSampler) with DistributedDataParallel; batch
    norm is SyncBatchNorm on CUDA, so its statistics are the whole global batch's as in one process (torch
    has no CPU SyncBatchNorm: with gloo each rank normalises by its share, and DDP copies rank 0's running
    statistics to every rank before each forward pass). Rank 0 alone validates (the same numbers as one
    process on the same weights), calls the hooks and hands its results to the others.
    """
    state, loop = setup(model, data, cfg, seed, ssl, dist)
    resume(state, loop, hooks)
    while not state.stopped and state.epoch < cfg.epochs:
        epoch = state.epoch + 1
        loop.sampler.set_epoch(epoch)
        start = time.perf_counter()
        train_loss, train_acc, n = train_epoch(state, loop, epoch)
        seconds = time.perf_counter() - start  # train_epoch's .item() waited for the device
        row, stop = None, False
        labelled = state.method.pseudo_labels() if dist.main and hooks.pseudo_labels else None
        if labelled is not None and uses_unlabeled(ssl, epoch):  # labelled at this epoch's start or in it
            hooks.pseudo_labels(epoch, *labelled)
        if dist.main:
            row = validate(state, loop, data, {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                                               "seconds": seconds})
            stop = bool(hooks.log_epoch(row, state.scored)) if hooks.log_epoch else False
        row, stop = distributed.broadcast((row, stop), dist, loop.device)
        state.history.append(row)
        state.epoch, state.images_seen, state.train_seconds = epoch, state.images_seen + n, state.train_seconds + seconds
        end_epoch(state, loop, row, stop)
        if hooks.save_state or dist.world_size > 1:  # every rank takes part in gathering the state
            saved = state.state_dict(dist, loop.device)
            if hooks.save_state:
                hooks.save_state(saved)
    return {
        "state_dict": {k: v.cpu() for k, v in state.best_state.items()},
        "best_epoch": state.best_epoch,
        "history": state.history,
        "epochs_run": len(state.history),
        "train_seconds": state.train_seconds,
        "images_per_s": state.images_seen / state.train_seconds if state.train_seconds else 0.0,
        "device": str(loop.device),
        "world_size": dist.world_size,
        "mean": loop.mean,
        "std": loop.std,
    }
