"""The semi-supervised methods as units (fewlabels.methods): the registry, and the numerics of each method's
threshold rule, distribution alignment and FreeMatch's fairness loss.

Each rule is checked on a small example computed by hand, and against USB's own code on random batches: the
`usb_*` functions below restate semilearn's hooks (microsoft/Semi-supervised-learning, MIT licence) line for line,
with the classes' state as local variables.
"""
import math
from collections import Counter

import pytest
import torch

from fewlabels import engine, registry
from fewlabels.methods.base import Method, Run
from fewlabels.methods import label_propagation
from fewlabels.methods.base import DistAlign
from fewlabels.methods.freematch import fairness_loss
from fewlabels.params import SSLConfig


def build(method: str, classes: int, unlabeled=range(0), n_images: int = 0, **ssl_settings) -> Method:
    """Method `method` of a run with `classes` classes whose training set has `n_images` images, those at
    positions `unlabeled` unlabeled."""
    ssl = SSLConfig(method=method, **ssl_settings)
    labels = torch.zeros(n_images, dtype=torch.int64)
    labels[list(unlabeled)] = -1
    return engine.build_method(ssl, Run(classes, list(unlabeled), n_images, torch.device("cpu"), labels))


# the registry -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", registry.METHODS)
def test_every_registered_method_is_a_module_with_its_method(name):
    method = build(name, 4, range(8), 8)
    assert isinstance(method, Method) and type(method).__module__ == f"fewlabels.methods.{name}"
    assert set(method.state_dict()) >= set(type(method).STATE)


def probs(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def random_batches(n_batches=30, batch=16, classes=4, n_unlabeled=40, seed=0):
    """(probs [batch, classes], positions) batches, confident enough that many pass a 0.9 cutoff."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        logits = torch.randn(batch, classes, generator=g) * 4 + torch.arange(classes) * 0.5  # some classes favoured
        yield logits.softmax(1), torch.randperm(n_unlabeled, generator=g)[:batch]


# FixMatch ---------------------------------------------------------------------------------------

def test_fixed_threshold_keeps_confidence_at_or_above_the_cutoff():
    mask = build("fixmatch", 2, threshold=0.7).mask(probs([0.7, 0.3], [0.6, 0.4], [0.1, 0.9]), torch.arange(3), None)
    assert mask.tolist() == [1.0, 0.0, 1.0]


# FlexMatch --------------------------------------------------------------------------------------

def test_flexmatch_thresholds_by_hand():
    """6 unlabeled images at training positions 10-15 of 20; 3 classes; cutoff 0.9."""
    flex = build("flexmatch", 3, range(10, 16), 20, threshold=0.9)
    assert flex.thresholds().tolist() == [0, 0, 0]  # nothing selected yet: every prediction counts
    flex.selected[:3] = torch.tensor([0, 0, 1])
    # counts: 3 unused, class 0: 2, class 1: 1, class 2: 0 -> beta = [2/3, 1/3, 0]; threshold 0.9 beta / (2 - beta)
    assert flex.thresholds() == pytest.approx([0.9 * (2 / 3) / (4 / 3), 0.9 * (1 / 3) / (5 / 3), 0.0])  # .45 .18 0
    batch = probs([0.5, 0.3, 0.2],     # position 10 (holds class 0): 0.5 >= 0.45 kept; not >= 0.9, memory stays 0
                  [0.4, 0.35, 0.25],   # position 13: class 0 at 0.4 < 0.45 dropped
                  [0.02, 0.03, 0.95],  # position 14: class 2 at 0.95 >= 0: kept; >= 0.9: remembered as class 2
                  [0.1, 0.7, 0.2])     # position 15: class 1 at 0.7 >= 0.18 kept
    index = torch.tensor([10, 13, 14, 15])
    assert flex.mask(batch, index, (batch, index)).tolist() == [1, 0, 1, 1]
    assert flex.selected.tolist() == [0, 0, 1, -1, 2, -1]
    # now 2 unused, 2, 1, 1 -> beta = [1, 1/2, 1/2]: the best-learnt class needs the full cutoff
    assert flex.thresholds() == pytest.approx([0.9, 0.3, 0.3])


def test_flexmatch_forgets_nothing_an_unconfident_batch_says():
    flex = build("flexmatch", 2, [0, 1], 2, threshold=0.9)
    flex.update(probs([0.95, 0.05], [0.2, 0.8]), torch.tensor([0, 1]))
    flex.update(probs([0.6, 0.4], [0.3, 0.7]), torch.tensor([0, 1]))
    assert flex.selected.tolist() == [0, -1]


def usb_flexmatch_masks(batches, n_unlabeled, classes, cutoff):
    """USB's FlexMatchThresholdingHook.masking with thresh_warmup=True, one batch after another."""
    selected_label = torch.ones((n_unlabeled,), dtype=torch.long) * -1
    classwise_acc = torch.zeros((classes,))
    masks = []
    for probs_x_ulb, idx_ulb in batches:
        max_probs, max_idx = torch.max(probs_x_ulb, dim=-1)
        mask = max_probs.ge(cutoff * (classwise_acc[max_idx] / (2. - classwise_acc[max_idx])))
        select = max_probs.ge(cutoff)
        if idx_ulb[select == 1].nelement() != 0:
            selected_label[idx_ulb[select == 1]] = max_idx[select == 1]
        pseudo_counter = Counter(selected_label.tolist())
        if max(pseudo_counter.values()) < n_unlabeled:
            for i in range(classes):
                classwise_acc[i] = pseudo_counter[i] / max(pseudo_counter.values())
        masks.append(mask.float())
    return masks


def test_flexmatch_masks_as_usb_does():
    batches = list(random_batches())
    flex = build("flexmatch", 4, range(40), 40, threshold=0.9)
    ours = [flex.mask(p, index, (p, index)) for p, index in batches]
    assert [m.tolist() for m in ours] == [m.tolist() for m in usb_flexmatch_masks(batches, 40, 4, 0.9)]
    assert 0 < torch.cat(ours).mean() < 1  # the example exercises both outcomes


# FreeMatch --------------------------------------------------------------------------------------

def test_freematch_thresholds_by_hand():
    """2 classes, momentum 0.5: everything starts at 1/2, and the batch is recorded before it is masked."""
    free = build("freematch", 2, stats_ema=0.5)
    assert free.thresholds().tolist() == [0.5, 0.5]
    batch = probs([0.9, 0.1], [0.6, 0.4], [0.3, 0.7])
    mask = free.mask(batch, torch.arange(3), (batch, torch.arange(3)))
    # time_p = 0.5 0.5 + 0.5 mean(0.9, 0.6, 0.7); p_model = 0.5 [.5, .5] + 0.5 [.6, .4]; label_hist with [2/3, 1/3]
    time_p = 0.25 + 0.5 * 2.2 / 3
    assert free.time_p.item() == pytest.approx(time_p)
    assert free.p_model.tolist() == pytest.approx([0.55, 0.45])
    assert free.label_hist.tolist() == pytest.approx([0.25 + 1 / 3, 0.25 + 1 / 6])
    assert free.thresholds().tolist() == pytest.approx([time_p, time_p * 0.45 / 0.55])  # 0.6167, 0.5045
    assert mask.tolist() == [1, 0, 1]  # 0.6 < 0.6167 for class 0; 0.7 >= 0.5045 for class 1


def usb_freematch(batches, classes, m):
    """USB's FreeMatchThresholingHook.masking (use_quantile False, clip_thresh False): masks and final state."""
    p_model = torch.ones((classes,)) / classes
    label_hist = torch.ones((classes,)) / classes
    time_p = p_model.mean()
    masks = []
    for probs_x_ulb, _ in batches:
        max_probs, max_idx = torch.max(probs_x_ulb, dim=-1, keepdim=True)
        time_p = time_p * m + (1 - m) * max_probs.mean()
        p_model = p_model * m + (1 - m) * probs_x_ulb.mean(dim=0)
        hist = torch.bincount(max_idx.reshape(-1), minlength=p_model.shape[0]).to(p_model.dtype)
        label_hist = label_hist * m + (1 - m) * (hist / hist.sum())
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        mod = p_model / torch.max(p_model, dim=-1)[0]
        masks.append(max_probs.ge(time_p * mod[max_idx]).to(max_probs.dtype))
    return masks, (time_p, p_model, label_hist)


def test_freematch_masks_and_statistics_as_usb():
    batches = list(random_batches())
    free = build("freematch", 4, stats_ema=0.9)
    ours = [free.mask(p, index, (p, index)) for p, index in batches]
    masks, (time_p, p_model, label_hist) = usb_freematch(batches, 4, 0.9)
    assert [m.tolist() for m in ours] == [m.tolist() for m in masks] and 0 < torch.cat(ours).mean() < 1
    assert torch.allclose(free.time_p, time_p) and torch.allclose(free.p_model, p_model)
    assert torch.allclose(free.label_hist, label_hist)


def usb_entropy_loss(mask, logits_s, prob_model, label_hist):
    """USB's freematch.entropy_loss."""
    def replace_inf_to_zero(val):
        val[val == float('inf')] = 0.0
        return val
    mask = mask.bool()
    logits_s = logits_s[mask]
    prob_s = logits_s.softmax(dim=-1)
    _, pred_label_s = torch.max(prob_s, dim=-1)
    hist_s = torch.bincount(pred_label_s, minlength=logits_s.shape[1]).to(logits_s.dtype)
    hist_s = hist_s / hist_s.sum()
    prob_model = prob_model.reshape(1, -1)
    label_hist = label_hist.reshape(1, -1)
    prob_model_scaler = replace_inf_to_zero(1 / label_hist).detach()
    mod_prob_model = prob_model * prob_model_scaler
    mod_prob_model = mod_prob_model / mod_prob_model.sum(dim=-1, keepdim=True)
    mean_prob_scaler_s = replace_inf_to_zero(1 / hist_s).detach()
    mod_mean_prob_s = prob_s.mean(dim=0, keepdim=True) * mean_prob_scaler_s
    mod_mean_prob_s = mod_mean_prob_s / mod_mean_prob_s.sum(dim=-1, keepdim=True)
    loss = mod_prob_model * torch.log(mod_mean_prob_s + 1e-12)
    loss = loss.sum(dim=1)
    return loss.mean()


def test_fairness_loss_by_hand():
    logits = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]).log()  # softmax gives these rows back
    keep = torch.tensor([1.0, 1.0, 0.0])
    # kept mean probabilities [.55, .45] over their histogram [.5, .5] -> [.55, .45];
    # p_model [.6, .4] over label_hist [.75, .25] -> [.8, 1.6] -> [1/3, 2/3]
    loss = fairness_loss(logits, keep, torch.tensor([0.6, 0.4]), torch.tensor([0.75, 0.25]))
    assert loss.item() == pytest.approx(math.log(0.55) / 3 + 2 * math.log(0.45) / 3, rel=1e-5)


def test_fairness_loss_as_usb_and_zero_without_a_kept_image():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(16, 5, generator=g) * 3
        keep = (torch.rand(16, generator=g) < 0.5).float()
        p_model = torch.rand(5, generator=g).softmax(0)
        label_hist = torch.rand(5, generator=g) * (torch.rand(5, generator=g) > 0.2)  # some classes never predicted
        label_hist = label_hist / label_hist.sum()
        expected = usb_entropy_loss(keep, logits, p_model, label_hist)
        assert fairness_loss(logits, keep, p_model, label_hist).item() == pytest.approx(expected.item(), rel=1e-5)
    logits = torch.randn(4, 5, requires_grad=True)
    loss = fairness_loss(logits, torch.zeros(4), p_model, label_hist)
    loss.backward()
    assert loss.item() == 0 and torch.all(logits.grad == 0)  # finite: no 0 / 0 on the way


# distribution alignment --------------------------------------------------------------------------

def test_distribution_alignment_by_hand():
    da = DistAlign(2, 0.5, "cpu")
    batch = probs([0.8, 0.2], [0.6, 0.4])
    da.update(batch, torch.arange(2))
    aligned = da(batch)
    # p_model = the first batch's mean [.7, .3]; each row times [.5, .5] / p_model, renormalised
    assert da.p_model.tolist() == pytest.approx([0.7, 0.3])
    row0, row1 = [0.8 / 0.7, 0.2 / 0.3], [0.6 / 0.7, 0.4 / 0.3]
    assert aligned.flatten().tolist() == pytest.approx([r / sum(row) for row in (row0, row1) for r in row], abs=1e-5)
    da.update(probs([0.5, 0.5]), torch.arange(1))
    aligned = da(probs([0.5, 0.5]))
    assert da.p_model.tolist() == pytest.approx([0.6, 0.4])  # 0.5 [.7, .3] + 0.5 [.5, .5]
    assert aligned.flatten().tolist() == pytest.approx([0.4, 0.6], abs=1e-5)  # [.5/.6, .5/.4] renormalised


def usb_dist_align(batches, classes, m):
    """USB's DistAlignEMAHook.dist_align with p_target_type 'uniform'."""
    p_target, p_model, out = torch.ones((classes,)) / classes, None, []
    for probs_x_ulb, _ in batches:
        p_model = probs_x_ulb.mean(0) if p_model is None else p_model * m + probs_x_ulb.mean(0) * (1 - m)
        aligned = probs_x_ulb * (p_target + 1e-6) / (p_model + 1e-6)
        out.append(aligned / aligned.sum(dim=-1, keepdim=True))
    return out


def test_distribution_alignment_as_usb():
    batches = list(random_batches())
    da = DistAlign(4, 0.9, "cpu")
    for (p, index), expected in zip(batches, usb_dist_align(batches, 4, 0.9)):
        da.update(p, index)
        assert torch.allclose(da(p), expected, atol=1e-6)


def test_alignment_runs_before_the_threshold_rule():
    """With alignment on, the rule sees (and the targets come from) the aligned probabilities."""
    batch = probs([0.8, 0.2], [0.7, 0.3])  # the model favours class 0; aligned, row 1 turns to class 1
    aligned = build("fixmatch", 2, threshold=0.5, dist_align=True, stats_ema=0.0)
    targets, keep = aligned.select(batch, torch.arange(2))
    assert targets.tolist() == [0, 1] and keep.tolist() == [1, 1]
    targets, _ = build("fixmatch", 2, threshold=0.5).select(batch, torch.arange(2))
    assert targets.tolist() == [0, 0]


# state ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, dist_align", [("fixmatch", True), ("flexmatch", True), ("freematch", False)])
def test_state_dict_round_trip_continues_identically(method, dist_align):
    ssl = {"method": method, "dist_align": dist_align, "stats_ema": 0.9, "threshold": 0.9}
    batches = list(random_batches())
    whole = build(**ssl, classes=4, unlabeled=range(40), n_images=40)
    masks = [whole.select(p, index)[1] for p, index in batches]
    first = build(**ssl, classes=4, unlabeled=range(40), n_images=40)
    for p, index in batches[:10]:
        first.select(p, index)
    second = build(**ssl, classes=4, unlabeled=range(40), n_images=40)
    second.load_state_dict(first.state_dict())
    assert [second.select(p, index)[1].tolist() for p, index in batches[10:]] == [m.tolist() for m in masks[10:]]
    fresh = build(**ssl, classes=4, unlabeled=range(40), n_images=40)  # control: without the state the masks differ
    assert [fresh.select(p, index)[1].tolist() for p, index in batches[10:]] != [m.tolist() for m in masks[10:]]


@pytest.mark.parametrize("method, dist_align", [("fixmatch", True), ("flexmatch", False), ("freematch", False)])
def test_ranks_that_gather_the_global_batch_keep_the_statistics_of_one_process(method, dist_align):
    """Two ranks, each masking its share of every batch but recording the whole (gathered) batch, end with the
    statistics, targets and masks of one process that saw the whole batches."""
    ssl = {"method": method, "dist_align": dist_align, "stats_ema": 0.9, "threshold": 0.9}
    single = build(**ssl, classes=4, unlabeled=range(40), n_images=40)
    ranks = [build(**ssl, classes=4, unlabeled=range(40), n_images=40) for _ in range(2)]
    for p, index in random_batches():
        cut = len(p) // 2  # rank 0's share, then rank 1's: the gathered batch in rank order
        shares = [(p[:cut], index[:cut]), (p[cut:], index[cut:])]
        whole_targets, whole_keep = single.select(p, index)
        for rank, (share, rows) in zip(ranks, zip(shares, (slice(0, cut), slice(cut, None)))):
            rank.gather = lambda probs, idx: (p, index)
            targets, keep = rank.select(*share)
            assert targets.tolist() == whole_targets[rows].tolist() and keep.tolist() == whole_keep[rows].tolist()
    for rank in ranks:
        assert str(rank.state_dict()) == str(single.state_dict())


# label propagation ------------------------------------------------------------------------------

def two_clusters(n=20, seed=0):
    """n points near (1, 0) then n near (0, 1) in 2-D, L2-normalised: class 0 and class 1."""
    g = torch.Generator().manual_seed(seed)
    points = torch.cat([torch.tensor([1.0, 0.0]) + 0.2 * torch.rand(n, 2, generator=g),
                        torch.tensor([0.0, 1.0]) + 0.2 * torch.rand(n, 2, generator=g)])
    return torch.nn.functional.normalize(points, dim=1)


def test_knn_graph_is_symmetric_without_self_loops():
    w = label_propagation.knn_graph(two_clusters(), k=5)
    assert (w != w.T).nnz == 0 and w.diagonal().sum() == 0
    assert ((w > 0).sum(axis=1) >= 5).all()  # each image's own 5 neighbours, and those that chose it


def test_one_label_per_cluster_propagates_to_the_whole_cluster():
    labels = torch.full((40,), -1)
    labels[3], labels[25] = 0, 1
    scores = label_propagation.propagate(two_clusters(), labels, 2, k=5, alpha=0.99)
    targets, weights, class_weights = label_propagation.pseudo_labels(scores, labels)
    assert targets.tolist() == [0] * 20 + [1] * 20
    assert weights[3] == weights[25] == 1 and ((weights >= 0) & (weights <= 1)).all() and weights.max() == 1
    assert class_weights.tolist() == [1.0, 1.0]  # 20 images each of 40 / 2 classes


def test_pseudo_labels_by_hand():
    """Rows: certain of class 0; unsure between 0 and 1 (uniform: weight 0); nothing reached it; labeled class 2."""
    scores = torch.tensor([[0.9, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.3, 0.0]])
    targets, weights, class_weights = label_propagation.pseudo_labels(scores, torch.tensor([-1, -1, -1, 2]))
    assert targets.tolist() == [0, 0, 0, 2]
    assert weights.tolist() == pytest.approx([1.0, 1 - math.log(2) / math.log(3), 0.0, 1.0])
    assert class_weights.tolist() == pytest.approx([(4 / 3) / 3, 4 / 3, (4 / 3) / 1])  # class 1: none, counted as 1


def test_mirrored_embedding_is_the_mean_of_each_image_and_its_mirror_image_normalised():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    images = (torch.rand(5, 1, 2, 3) * 255).to(torch.uint8)
    prep = lambda batch: batch.float() / 255  # noqa: E731
    features = model[:3](prep(images))
    mirrored = model[:3](prep(images).flip(3))
    expected = torch.nn.functional.normalize((features + mirrored) / 2, dim=1)
    assert torch.allclose(label_propagation.embed(model, prep, images, mirror=True), expected, atol=1e-6)
    plain = label_propagation.embed(model, prep, images)
    assert torch.allclose(plain, torch.nn.functional.normalize(features, dim=1), atol=1e-6)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the mirror image tells the embedding something


def test_embedding_in_passes_of_embed_batch_keeps_every_image_in_order():
    """More images than one pass holds: the features are one forward over all of them, row for row."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    images = (torch.rand(2 * label_propagation.EMBED_BATCH + 7, 1, 2, 3) * 255).to(torch.uint8)
    prep = lambda batch: batch.float() / 255  # noqa: E731
    expected = torch.nn.functional.normalize(model[:3](prep(images)), dim=1)
    assert torch.allclose(label_propagation.embed(model, prep, images), expected, atol=1e-6)


class AutocastSpy(torch.nn.Module):
    """A model that notes, at each forward, whether bf16 autocast is on for the CPU."""
    def __init__(self):
        super().__init__()
        self.body, self.head, self.autocast = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2), []

    def forward(self, x):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return self.head(torch.relu(self.body(x.flatten(1))))


@pytest.mark.parametrize("bf16", [False, True])
def test_label_propagation_embeds_under_the_runs_autocast(bf16):
    """The embedding's passes run in bf16 exactly when the run's other passes do (Run.bf16), and the features
    the graph is built on stay float32."""
    torch.manual_seed(0)
    model, images = AutocastSpy(), (torch.rand(12, 1, 2, 2) * 255).to(torch.uint8)
    lp = engine.build_method(SSLConfig(method="label_propagation", lp_knn=3),
                             Run(2, list(range(2, 12)), 12, torch.device("cpu"), torch.tensor([0, 1] + [-1] * 10),
                                 bf16=bf16))
    lp.start_epoch(model, lambda batch: batch.float(), images)
    assert model.autocast and set(model.autocast) == {bf16}
    assert label_propagation.embed(model, lambda batch: batch.float(), images, amp=bf16).dtype == torch.float32


def test_label_propagation_trains_towards_the_propagated_labels():
    """Before the first propagation an unlabeled batch teaches nothing; after it, its loss is the weighted
    cross-entropy to the propagated classes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    images = (torch.rand(12, 1, 2, 2) * 255).to(torch.uint8)
    labels = torch.tensor([0, 1] + [-1] * 10)
    lp = engine.build_method(SSLConfig(method="label_propagation", lp_knn=3),
                             Run(2, list(range(2, 12)), 12, torch.device("cpu"), labels))
    views = type("Views", (), {"weak": staticmethod(lambda x: x)})
    x, index = images[2:6].float(), torch.arange(2, 6)
    assert lp.loss(model, x, views, model, index).item() == 0.0
    lp.start_epoch(model, lambda batch: batch.float(), images)
    expected = torch.nn.functional.cross_entropy(model(x), lp.targets[index], reduction="none")
    expected = (expected * lp.weights[index] * lp.class_weights[lp.targets[index]]).mean()
    assert lp.loss(model, x, views, model, index).item() == pytest.approx(expected.item())
    assert lp.targets[:2].tolist() == [0, 1] and lp.weights[:2].tolist() == [1.0, 1.0]
    # with ssl.lp_strong, the same targets and weights on the strong view
    strong_lp = engine.build_method(SSLConfig(method="label_propagation", lp_knn=3, lp_strong=True),
                                    Run(2, list(range(2, 12)), 12, torch.device("cpu"), labels))
    strong_lp.start_epoch(model, lambda batch: batch.float(), images)
    views.strong = staticmethod(lambda x: x.flip(0))
    expected = torch.nn.functional.cross_entropy(model(x.flip(0)), lp.targets[index], reduction="none")
    expected = (expected * lp.weights[index] * lp.class_weights[lp.targets[index]]).mean()
    assert strong_lp.loss(model, x, views, model, index).item() == pytest.approx(expected.item())
    assert lp.loss(model, x, views, model, index).item() != pytest.approx(expected.item())


@pytest.mark.parametrize("method", ["label_propagation", "skip", "fixmatch"])
def test_fit_hands_the_caller_each_relabelling_and_nothing_else(method):
    """After every epoch that trained on unlabeled batches (not the warm-up epoch, whose unlabeled weight is
    0), fit hands the caller the method's labels: label propagation's of every image, fixmatch's of every
    unlabeled image its batches brought; skip has none to hand."""
    from fewlabels.data import FitInputs, mask_labels
    from fewlabels.engine import Hooks, fit
    from fewlabels.params import TrainConfig
    from test_engine import separable, tiny_model

    x, y = separable(120)
    labeled, unlabeled = list(range(0, 120, 4)), [i for i in range(120) if i % 4]
    rounds = []

    def keep(epoch, targets, weights):
        rounds.append((epoch, targets.clone(), weights.clone()))

    fit(tiny_model(), FitInputs(x, mask_labels(y, labeled), labeled, unlabeled, *separable(30, seed=1)),
        TrainConfig(epochs=3, batch_size=20, device="cpu", lr=3e-3), 0,
        SSLConfig(method=method, lp_knn=5, warmup_epochs=1), hooks=Hooks(pseudo_labels=keep))
    if method == "skip":
        assert rounds == []
        return
    assert [epoch for epoch, _, _ in rounds] == [2, 3]
    for _, targets, weights in rounds:
        assert len(targets) == len(weights) == 120 and ((weights >= 0) & (weights <= 1)).all()
        assert (targets[unlabeled] >= 0).all()  # three unlabeled batches a step: every image drawn
        if method == "label_propagation":
            assert torch.equal(targets[labeled], y[labeled]) and (weights[labeled] == 1).all()
        else:  # labeled images come in labeled batches only
            assert (targets[labeled] == -1).all() and (weights[labeled] == 0).all()
            assert set(weights.unique().tolist()) <= {0.0, 1.0}


class Fixed(torch.nn.Module):
    """A model that answers `logits` whatever it is shown (the strong view included), with a gradient."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, x):
        return self.logits


@pytest.mark.parametrize("method", ["fixmatch", "flexmatch", "freematch", "pseudo_label", "mean_teacher"])
def test_batch_by_batch_methods_hand_over_what_their_loss_trained_each_image_towards(method):
    from fewlabels.augment import Views, none

    logits = torch.tensor([[4.0, 0, 0], [0, 0.2, 0], [0, 0, 5.0]])  # confident 0, unsure 1, confident 2
    model = Fixed(logits)
    m = build(method, 3, range(1, 6), 6, threshold=0.9, fairness_weight=0.0)
    assert m.pseudo_labels() is None  # no batch yet
    index = torch.tensor([4, 1, 5])
    loss = m.loss(model, torch.zeros(3, 1, 2, 2), Views(none, none, none), model, index)
    targets, weights = m.pseudo_labels()
    assert targets.tolist() == [-1, 1, -1, -1, 0, 2]  # the teacher's classes, at the batch's images only
    assert weights[[0, 2, 3]].tolist() == [0, 0, 0]
    if method == "mean_teacher":  # no threshold: every image counts, towards the teacher's probabilities
        assert weights[index].tolist() == [1, 1, 1]
    else:  # the record is exactly what the loss used
        if method in ("fixmatch", "pseudo_label"):
            assert weights[index].tolist() == [1, 0, 1]  # softmax maxima 0.965, 0.381, 0.987 against 0.9
        ce = torch.nn.functional.cross_entropy(logits, targets[index], reduction="none")
        assert loss.item() == pytest.approx((ce * weights[index]).mean().item())
    m.start_epoch(model, None, None)
    assert m.pseudo_labels() is None  # every epoch's record starts afresh
