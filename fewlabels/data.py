"""Datasets, the pure-batch sampler and the collate function.

Every batch is entirely labeled or entirely unlabeled. The training set is held as one uint8
tensor (on the CPU or the GPU) and fetched a whole batch at a time by tensor indexing, so no
per-sample Python runs in the training loop. The labels of unlabeled indices are never stored
in the training dataset, so no code downstream can read them.
"""
import math
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fewlabels.errors import ParamError

UNLABELED = -1  # stored in place of the label of an unlabeled index


class IndexBatch(NamedTuple):
    indices: torch.Tensor  # int64 positions into the dataset
    labeled: bool


class Batch(NamedTuple):
    x: torch.Tensor               # uint8 images [B, C, H, W]
    y: torch.Tensor | None        # int64 labels [B]; None for an unlabeled batch
    index: torch.Tensor           # int64 positions of the images in the dataset [B] (FlexMatch remembers each image)

    @property
    def labeled(self) -> bool:
        return self.y is not None


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (seed, epoch) pairs that never collide as seed + epoch would."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint64)[0] >> 1)


def rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed for one rank of a distributed run: its own augmentation and dropout draws, none of
    them an epoch's seed (the three-word entropy differs from epoch_seed's two)."""
    return int(np.random.SeedSequence([seed, rank, 1]).generate_state(2, np.uint64)[0] >> 1)


def spread(n_labeled: int, n_unlabeled: int) -> list[bool]:
    """Order of labeled (True) and unlabeled (False) batches, evenly interleaved.

    Batch i of k sits at position (i + 0.5) / k on [0, 1]; merging by position spreads each kind
    evenly through the epoch instead of running all labeled batches first.
    """
    keys = [((i + 0.5) / n_labeled, True) for i in range(n_labeled)]
    keys += [((j + 0.5) / n_unlabeled, False) for j in range(n_unlabeled)]
    return [labeled for _, labeled in sorted(keys, key=lambda k: k[0])]


def _chunks(indices: torch.Tensor, size: int, smallest: int) -> list[torch.Tensor]:
    """`indices` in batches of `size`; a last batch of fewer than `smallest` joins the batch before it."""
    chunks = [c for c in indices.split(size) if len(c)]  # split() of an empty tensor gives one empty chunk
    if len(chunks) > 1 and len(chunks[-1]) < smallest:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


def smallest_batch(size: int, world_size: int) -> int:
    """The smallest last batch kept on its own: 2 per rank (1 when one-image batches were asked for)."""
    return 2 * world_size if size > 1 else 1


def one_pass_batches(n: int, size: int, world_size: int = 1) -> int:
    """Batches in one pass over `n` images (_chunks: a last batch under smallest_batch is folded in)."""
    smallest = smallest_batch(size, world_size)
    full, rest = divmod(n, size)
    return full + (rest > 0) - (0 < rest < smallest and full > 0)


def _draw(indices: torch.Tensor, size: int, smallest: int, n_batches: int, gen: torch.Generator) -> list[torch.Tensor]:
    """`n_batches` batches of `indices`: from one shuffled pass when it has that many (the first of them), else
    from as many shuffled passes as needed, one after another, cut into full batches of `size`."""
    first = indices[torch.randperm(len(indices), generator=gen)]
    one_pass = _chunks(first, size, smallest)
    if n_batches <= len(one_pass):
        return one_pass[:n_batches]
    passes = [first] + [indices[torch.randperm(len(indices), generator=gen)]
                        for _ in range(math.ceil(n_batches * size / len(indices)) - 1)]
    return list(torch.cat(passes).split(size)[:n_batches])


class PureBatchSampler(Sampler[IndexBatch]):
    """Yields IndexBatch(indices, labeled): each batch all labeled or all unlabeled.

    Per epoch every labeled and every unlabeled index appears exactly once. There is no
    drop_last: the last labeled and the last unlabeled batch may be smaller than batch_size,
    so no image is skipped. A single leftover image joins the batch before it instead (that
    batch holds batch_size + 1): a one-image batch breaks batch norm in training mode.
    Call set_epoch(e) before iterating: the order is reshuffled from (seed, epoch), so the
    same seed gives the same batches on every machine.
    `unlabeled_batch_size` defaults to batch_size. `unlabeled_per_labeled` caps the unlabeled
    batches of an epoch at that many per labeled batch (a fresh random subset each epoch);
    None keeps them all. Indices are moved to `device` once per epoch.

    A step budget: `labeled_batches` sets the labeled batches (optimizer steps) of an epoch whatever the
    labeled set's size. Fewer than one pass gives: the first of one shuffled pass; more: consecutive shuffled
    passes cut into full batches, so each labeled image is seen as often as any other, to within one. The
    unlabeled batches then number `unlabeled_per_labeled` per labeled batch, drawn the same way.

    Distributed training (`world_size` processes in lockstep, this one `rank`): batch_size is the global
    batch, what one optimizer step sees. Every rank draws the same global batches (same seed), so at every
    step all ranks hold the same kind of batch, and each takes its share of it, rank::world_size: the
    ranks' shares differ by at most one image, are disjoint, and together cover every index once per epoch.
    Every rank has the same number of batches, so none runs out early (which would hang the all-reduce). A
    last global batch smaller than 2 x world_size joins the one before it, so every share holds at least
    two images (with world_size 1: the single-image rule above).
    """

    # Ten arguments: what to draw, how many and for which process; each comes from its own setting, and torch's
    # samplers take their configuration flat like this.
    def __init__(self, labeled, unlabeled, batch_size: int, seed: int,
                 unlabeled_batch_size: int | None = None, device: str | torch.device = "cpu",
                 unlabeled_per_labeled: float | None = None, rank: int = 0, world_size: int = 1,
                 labeled_batches: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.labeled = torch.as_tensor(np.asarray(labeled), dtype=torch.int64)
        self.unlabeled = torch.as_tensor(np.asarray(unlabeled), dtype=torch.int64)
        self.batch_size = batch_size
        self.unlabeled_batch_size = unlabeled_batch_size or batch_size
        self.unlabeled_per_labeled = unlabeled_per_labeled
        self.labeled_batches = labeled_batches if len(self.labeled) else None
        self.rank, self.world_size = rank, world_size
        self.seed, self.epoch, self.device = seed, 0, device
        for kind, indices in (("labeled", self.labeled), ("unlabeled", self.unlabeled)):
            if 0 < len(indices) < 2 * world_size and world_size > 1:
                raise ParamError(f"{len(indices)} {kind} images cannot be shared by {world_size} processes: each "
                                 "needs at least 2 per batch; lower dist.nproc_per_node or raise labeled_frac")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _smallest(self, size: int) -> int:
        return smallest_batch(size, self.world_size)

    def _all_batches(self, labeled: bool) -> int:
        """Batches in one pass over the images of that kind."""
        n, size = (len(self.labeled), self.batch_size) if labeled else (len(self.unlabeled), self.unlabeled_batch_size)
        return one_pass_batches(n, size, self.world_size)

    def n_batches(self, labeled: bool) -> int:
        """Batches of that kind per epoch (the same on every rank)."""
        if labeled:
            return self.labeled_batches or self._all_batches(True)
        n = self._all_batches(False)
        if self.unlabeled_per_labeled is None or n == 0:
            return n
        wanted = math.ceil(self.unlabeled_per_labeled * self.n_batches(True))
        return wanted if self.labeled_batches else min(n, wanted)  # a step budget draws more passes if needed

    def __len__(self) -> int:
        return self.n_batches(True) + self.n_batches(False)

    def __iter__(self):
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        chunks = {
            True: _draw(self.labeled, self.batch_size, self._smallest(self.batch_size), self.n_batches(True), gen),
            False: _draw(self.unlabeled, self.unlabeled_batch_size, self._smallest(self.unlabeled_batch_size),
                         self.n_batches(False), gen),
        }
        order = spread(len(chunks[True]), len(chunks[False]))
        taken = {True: iter(chunks[True]), False: iter(chunks[False])}
        batches = [next(taken[labeled])[self.rank::self.world_size] for labeled in order]
        if not batches:
            return
        # One host-to-device copy per epoch instead of one per step.
        flat = torch.cat(batches).to(self.device, non_blocking=True)
        for labeled, indices in zip(order, flat.split([len(b) for b in batches])):
            yield IndexBatch(indices, labeled)


def mask_labels(labels, labeled) -> torch.Tensor:
    """A copy of `labels` where every index not in `labeled` holds UNLABELED instead of its label."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    masked = torch.full_like(labels, UNLABELED)
    keep = torch.as_tensor(np.asarray(labeled), dtype=torch.int64)
    masked[keep] = labels[keep]
    return masked


class FitInputs(NamedTuple):
    """engine.fit's data: `fit(model, inputs, cfg, seed, ...)`."""
    train_images: torch.Tensor  # uint8 [N_train, C, H, W]
    train_labels: torch.Tensor  # int64 [N_train], UNLABELED at every unlabeled position
    labeled: np.ndarray         # positions in the train split
    unlabeled: np.ndarray
    valid_images: torch.Tensor
    valid_labels: torch.Tensor


def fit_inputs(images, labels, train_idx, valid_idx, labeled, unlabeled) -> FitInputs:
    """engine.fit's data arguments from the prepared training arrays and the split/index files.

    The index files hold positions in the full training set; fit wants positions in the train
    split, and the train split's labels with every unlabeled one hidden.
    """
    labeled_pos, unlabeled_pos = np.searchsorted(train_idx, labeled), np.searchsorted(train_idx, unlabeled)
    return FitInputs(
        torch.from_numpy(images[train_idx]), mask_labels(labels[train_idx], labeled_pos), labeled_pos, unlabeled_pos,
        torch.from_numpy(images[valid_idx]), torch.from_numpy(labels[valid_idx]),
    )


class InMemoryImages(Dataset):
    """uint8 images [N, C, H, W] and labels [N] held as tensors; fetched a batch at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, batch: IndexBatch):
        """Called by DataLoader with each IndexBatch from the batch sampler."""
        return self.images[batch.indices], self.labels[batch.indices], batch


def collate_pure(fetched) -> Batch:
    """Turn a fetched (images, labels, IndexBatch) triple into a Batch; unlabeled batches carry no labels."""
    images, labels, batch = fetched
    return Batch(images, labels if batch.labeled else None, batch.indices)
