"""PureBatchSampler: pure batches, full coverage, deterministic order, evenly spread kinds."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fewlabels.errors import ParamError
from fewlabels.data import Batch, InMemoryImages, PureBatchSampler, collate_pure, epoch_seed, spread

# (n labeled images, n unlabeled images, batch size): even and ragged splits, one kind empty,
# and very unequal kinds (1 labeled batch against 99 unlabeled ones and the reverse).
SPLITS = [
    (50, 50, 10),
    (53, 47, 10),     # both kinds end in a partial batch
    (51, 21, 10),     # one image left over: it joins the last full batch (batch norm needs 2+)
    (1, 10, 10),      # a single labeled image: a batch of one is all there can be
    (100, 0, 10),     # fully labeled (labeled_frac = 1)
    (0, 100, 10),     # no labels at all
    (10, 990, 10),
    (990, 10, 10),
    (7, 3, 1),        # batch size 1: one image per batch
    (5, 200, 64),     # fewer images than one batch
]


def make_sampler(n_labeled, n_unlabeled, batch_size, seed=0, **kwargs):
    """Labeled and unlabeled indices interleaved through 0..N-1, as the index stage produces them."""
    rng = np.random.default_rng(123)
    positions = rng.permutation(n_labeled + n_unlabeled)
    labeled, unlabeled = np.sort(positions[:n_labeled]), np.sort(positions[n_labeled:])
    return PureBatchSampler(labeled, unlabeled, batch_size, seed, **kwargs), labeled, unlabeled


def epoch(sampler, e=1):
    sampler.set_epoch(e)
    return list(sampler)


@pytest.mark.parametrize("n_labeled,n_unlabeled,batch_size", SPLITS)
def test_every_batch_is_pure_and_flagged_correctly(n_labeled, n_unlabeled, batch_size):
    sampler, labeled, unlabeled = make_sampler(n_labeled, n_unlabeled, batch_size)
    labeled, unlabeled = set(labeled.tolist()), set(unlabeled.tolist())
    for batch in epoch(sampler):
        indices = set(batch.indices.tolist())
        assert indices, "empty batch"
        assert indices <= (labeled if batch.labeled else unlabeled)


@pytest.mark.parametrize("n_labeled,n_unlabeled,batch_size", SPLITS)
def test_each_index_appears_exactly_once_per_epoch(n_labeled, n_unlabeled, batch_size):
    sampler, labeled, unlabeled = make_sampler(n_labeled, n_unlabeled, batch_size)
    for e in (1, 2):
        batches = epoch(sampler, e)
        for kind, expected in ((True, labeled), (False, unlabeled)):
            seen = torch.cat([b.indices for b in batches if b.labeled == kind] or [torch.empty(0, dtype=torch.int64)])
            assert sorted(seen.tolist()) == expected.tolist()  # no index dropped or repeated
            sizes = [len(b.indices) for b in batches if b.labeled == kind]
            assert sizes == expected_sizes(len(expected), batch_size)


def expected_sizes(n, batch_size):
    """Full batches, then the partial rest; a rest of one image is folded into the batch before it."""
    full, rest = divmod(n, batch_size)
    if rest == 1 and full:
        return [batch_size] * (full - 1) + [batch_size + 1]
    return [batch_size] * full + ([rest] if rest else [])


@pytest.mark.parametrize("n,batch_size", [(33, 32), (65, 64), (11, 2), (2, 1), (1, 5), (20, 8)])
def test_no_one_image_batch_unless_unavoidable(n, batch_size):
    # BatchNorm cannot train on one image: a lone leftover (n % batch_size == 1) must not be its own batch.
    for labeled in (True, False):
        sampler = PureBatchSampler(range(n) if labeled else [], [] if labeled else range(n), batch_size, seed=0)
        sizes = [len(b.indices) for b in epoch(sampler)]
        assert sum(sizes) == n and len(sizes) == len(sampler)
        assert min(sizes) > 1 or batch_size == 1 or n == 1


@pytest.mark.parametrize("n_labeled,n_unlabeled,batch_size", SPLITS)
def test_len_is_the_number_of_batches_yielded(n_labeled, n_unlabeled, batch_size):
    sampler, _, _ = make_sampler(n_labeled, n_unlabeled, batch_size)
    batches = epoch(sampler)
    assert len(sampler) == len(batches)
    assert sampler.n_batches(True) == sum(b.labeled for b in batches)
    assert sampler.n_batches(False) == sum(not b.labeled for b in batches)


def test_empty_sampler_yields_nothing():
    sampler = PureBatchSampler([], [], 8, seed=0)
    assert len(sampler) == 0 and list(sampler) == []


def test_unlabeled_batch_size_is_separate():
    sampler, _, _ = make_sampler(20, 90, 10, unlabeled_batch_size=30)
    batches = epoch(sampler)
    assert [len(b.indices) for b in batches if b.labeled] == [10, 10]
    assert [len(b.indices) for b in batches if not b.labeled] == [30, 30, 30]


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_below_one_is_rejected(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        PureBatchSampler([0], [1], batch_size, seed=0)


def as_lists(batches):
    return [(b.labeled, b.indices.tolist()) for b in batches]


def test_same_seed_and_epoch_give_identical_batches():
    # Two separate samplers, so nothing can leak through shared state.
    a, _, _ = make_sampler(53, 147, 10, seed=5)
    b, _, _ = make_sampler(53, 147, 10, seed=5)
    assert as_lists(epoch(a, 3)) == as_lists(epoch(b, 3))
    assert as_lists(epoch(a, 3)) == as_lists(epoch(a, 3))  # re-iterating an epoch repeats it


def test_different_epoch_reshuffles():
    sampler, _, _ = make_sampler(53, 147, 10, seed=5)
    assert as_lists(epoch(sampler, 1)) != as_lists(epoch(sampler, 2))


def test_different_seed_reshuffles():
    a, _, _ = make_sampler(53, 147, 10, seed=5)
    b, _, _ = make_sampler(53, 147, 10, seed=6)
    assert as_lists(epoch(a, 1)) != as_lists(epoch(b, 1))


def test_epoch_seed_does_not_collide_like_seed_plus_epoch():
    # seed + epoch would make (0, 1) and (1, 0) the same shuffle.
    assert epoch_seed(0, 1) != epoch_seed(1, 0)
    assert epoch_seed(3, 4) == epoch_seed(3, 4)
    assert 0 <= epoch_seed(2**32 - 1, 10**6) < 2**63


def assert_evenly_spread(flags):
    """Every prefix holds as many labeled batches as its share of the epoch, to within one."""
    n_labeled, n = sum(flags), len(flags)
    count = 0
    for prefix_len, labeled in enumerate(flags, start=1):
        count += labeled
        assert abs(count - prefix_len * n_labeled / n) <= 1, (prefix_len, count, flags)


@pytest.mark.parametrize("n_labeled,n_unlabeled,batch_size", SPLITS)
def test_labeled_batches_are_spread_through_the_epoch(n_labeled, n_unlabeled, batch_size):
    sampler, _, _ = make_sampler(n_labeled, n_unlabeled, batch_size)
    flags = [b.labeled for b in epoch(sampler)]
    assert_evenly_spread(flags)


@pytest.mark.parametrize("n_labeled,n_unlabeled", [(0, 0), (0, 5), (5, 0), (1, 1), (1, 99), (99, 1),
                                                   (3, 7), (17, 40), (64, 63)])
def test_spread_interleaves_batch_kinds(n_labeled, n_unlabeled):
    flags = spread(n_labeled, n_unlabeled)
    assert sum(flags) == n_labeled and len(flags) == n_labeled + n_unlabeled
    assert_evenly_spread(flags)


def test_labeled_first_order_would_fail_the_spread_check():
    # The check above has teeth: all labeled batches first is exactly what spread() avoids.
    with pytest.raises(AssertionError):
        assert_evenly_spread([True] * 3 + [False] * 7)


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("n_labeled,n_unlabeled,batch_size", [(30, 70, 16), (100, 0, 16), (0, 40, 16)])
def test_dataloader_yields_pure_batches(channels, size, n_labeled, n_unlabeled, batch_size):
    n = n_labeled + n_unlabeled
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8)
    labels = torch.arange(n) % 10
    sampler, labeled, _ = make_sampler(n_labeled, n_unlabeled, batch_size)
    sampler.set_epoch(1)
    loader = DataLoader(InMemoryImages(images, labels), batch_sampler=sampler, collate_fn=collate_pure)
    expected = epoch(sampler, 1)  # what the sampler yields, to line the loader's batches up against
    batches = list(loader)
    assert len(batches) == len(expected) == len(loader)
    for batch, index_batch in zip(batches, expected):
        assert isinstance(batch, Batch)
        assert batch.x.dtype == torch.uint8 and batch.x.shape == (len(index_batch.indices), channels, size, size)
        assert torch.equal(batch.x, images[index_batch.indices])
        assert batch.labeled == index_batch.labeled
        if index_batch.labeled:
            assert torch.equal(batch.y, labels[index_batch.indices])
        else:
            assert batch.y is None


@pytest.mark.parametrize("ratio,n_unlabeled_batches", [(1.0, 3), (0.5, 2), (2.5, 8), (100.0, 20), (None, 20)])
def test_unlabeled_per_labeled_caps_unlabeled_batches(ratio, n_unlabeled_batches):
    # 3 labeled batches, 20 unlabeled ones: ratio r keeps ceil(3 r) of them (at most all 20) per epoch.
    sampler, _, unlabeled = make_sampler(30, 200, 10, unlabeled_per_labeled=ratio)
    subsets = []
    for e in (1, 2):
        batches = epoch(sampler, e)
        assert len(batches) == len(sampler) == 3 + n_unlabeled_batches
        assert sum(b.labeled for b in batches) == 3
        drawn = torch.cat([b.indices for b in batches if not b.labeled]).tolist()
        assert len(drawn) == len(set(drawn)) == 10 * n_unlabeled_batches  # no repeats within an epoch
        assert set(drawn) <= set(unlabeled.tolist())
        assert_evenly_spread([b.labeled for b in batches])
        subsets.append(set(drawn))
    if n_unlabeled_batches < 20:
        assert subsets[0] != subsets[1]  # a fresh subset each epoch, so all unlabeled images get used


# distributed: ranks in lockstep --------------------------------------------------------------------

LOCKSTEP = [  # (n labeled, n unlabeled, global batch size, ranks, unlabeled batches per labeled batch)
    (50, 50, 10, 2, None),
    (53, 47, 10, 2, None),   # ragged: the last global batch of each kind splits unevenly
    (51, 21, 10, 3, None),   # a last batch of 1 and of 1: folded into the batch before
    (45, 300, 16, 4, 3),     # unlabeled batches capped at 3 per labeled batch
    (13, 0, 8, 2, None),     # a last batch of 5 (>= 2 per rank) stays on its own
    (6, 6, 64, 3, None),     # fewer images than one batch: every rank still gets 2
]


@pytest.mark.parametrize("n_labeled,n_unlabeled,batch_size,world_size,ratio", LOCKSTEP)
def test_ranks_draw_the_same_kind_at_every_step_and_cover_every_index_once(
        n_labeled, n_unlabeled, batch_size, world_size, ratio):
    ranks = [make_sampler(n_labeled, n_unlabeled, batch_size, rank=r, world_size=world_size,
                          unlabeled_per_labeled=ratio)[0] for r in range(world_size)]
    for e in (1, 2):
        per_rank = [epoch(s, e) for s in ranks]
        assert len({len(batches) for batches in per_rank}) == 1  # nobody runs out early: DDP would hang
        assert all(len(per_rank[0]) == len(s) for s in ranks)
        for step in zip(*per_rank):
            assert len({b.labeled for b in step}) == 1               # same kind on every rank
            sizes = [len(b.indices) for b in step]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 2  # fair shares, batch norm-safe
        seen = {True: [], False: []}
        for batches in per_rank:
            for b in batches:
                seen[b.labeled] += b.indices.tolist()
        _, labeled, unlabeled = make_sampler(n_labeled, n_unlabeled, batch_size)
        assert sorted(seen[True]) == labeled.tolist()                # every labeled index once, across ranks
        assert len(seen[False]) == len(set(seen[False])) and set(seen[False]) <= set(unlabeled.tolist())
        if ratio is None:
            assert sorted(seen[False]) == unlabeled.tolist()


def test_one_rank_draws_what_the_single_process_sampler_draws():
    """world_size 1 is today's sampler: the same batches, in the same order."""
    single, _, _ = make_sampler(53, 47, 10)
    ranked, _, _ = make_sampler(53, 47, 10, rank=0, world_size=1)
    assert [(b.labeled, b.indices.tolist()) for b in epoch(single)] == \
           [(b.labeled, b.indices.tolist()) for b in epoch(ranked)]


def test_too_few_images_for_the_ranks_is_a_clear_error():
    with pytest.raises(ParamError, match="3 labeled images cannot be shared by 2 processes"):
        make_sampler(3, 10, 8, world_size=2)


@pytest.mark.parametrize("n_labeled, n_unlabeled, steps, ratio", [
    (50, 950, 10, None),   # 10 steps from 5 labeled batches a pass: two whole passes
    (53, 947, 9, 2.0),     # a ragged pass, and 2 unlabeled batches a step from 94 a pass
    (30, 70, 2, 3.0),      # fewer steps than one pass: the first 2 batches of it
    (7, 40, 5, 7.0),       # 35 unlabeled batches, more than the 4 a pass: as many passes as needed
])
def test_a_step_budget_draws_whole_passes_of_full_batches(n_labeled, n_unlabeled, steps, ratio):
    """labeled_batches: as many optimizer steps an epoch whatever the labeled set's size; each labeled image is
    seen as often as any other, to within one, and the unlabeled batches follow the ratio."""
    sampler, labeled, unlabeled = make_sampler(n_labeled, n_unlabeled, 10, labeled_batches=steps,
                                               unlabeled_per_labeled=ratio)
    batches = epoch(sampler)
    mine = [b for b in batches if b.labeled]
    assert len(mine) == sampler.n_batches(True) == steps
    one_pass = -(-n_labeled // 10)
    if steps > one_pass:
        assert all(len(b.indices) == 10 for b in mine)  # whole batches cut from consecutive passes
        counts = np.bincount(torch.cat([b.indices for b in mine]).numpy(), minlength=n_labeled + n_unlabeled)[labeled]
        assert counts.max() - counts.min() <= 1
    theirs = [b for b in batches if not b.labeled]
    assert len(theirs) == sampler.n_batches(False) == (-(-n_unlabeled // 10) if ratio is None else
                                                        int(np.ceil(ratio * steps)))
    assert set(torch.cat([b.indices for b in theirs]).tolist()) <= set(unlabeled.tolist())
    assert [b.indices.tolist() for b in epoch(sampler)] == [b.indices.tolist() for b in batches]  # same seed, epoch


def test_a_budget_of_one_pass_is_todays_epoch():
    """At labeled_frac 1.0 the default budget is exactly one pass: the same batches as without a budget."""
    plain, _, _ = make_sampler(53, 0, 10)
    budget, _, _ = make_sampler(53, 0, 10, labeled_batches=plain.n_batches(True))
    assert [b.indices.tolist() for b in epoch(budget)] == [b.indices.tolist() for b in epoch(plain)]
