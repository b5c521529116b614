"""Which embedding gives label propagation the most accurate pseudo-labels per CPU-second (issue 20)?

Outside DVC, on the pipeline's split and 1% index of the real Fashion-MNIST: an optional contrastive phase
(SimCLR's NT-Xent on two strong views of every training image, for --simclr-s seconds), then --steps
supervised Adam steps on the labeled images (batch 64, train.augment --aug), then one propagation
(fewlabels.methods.label_propagation, k 50, alpha 0.99; --mirror, --mix: variants) and its accuracy on
the unlabeled images against their hidden labels (fewlabels.metrics.pseudo_label_scores, as the train
stage scores them). Prints one JSON line.

    python -m bench.probes.embedding_probe --aug flip_crop_cutout --steps 1688
    python -m bench.probes.embedding_probe --aug flip_crop --simclr-s 240
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import REPO
from fewlabels import augment, prepared, splits
from fewlabels.datasets import DATASETS
from fewlabels.inference import Normalize, channel_stats, predict
from fewlabels.methods.label_propagation import embed, last_linear, propagate, pseudo_labels
from fewlabels.metrics import pseudo_label_scores
from fewlabels.models import build_model

BATCH = 64          # the pipeline's train.batch_size
SIMCLR_BATCH = 256  # pairs per contrastive step
TEMPERATURE = 0.5   # NT-Xent's, as SimCLR's CIFAR runs


def simclr(model, prep, images: torch.Tensor, seconds: float, seed: int) -> int:
    """Train `model`'s features with NT-Xent for `seconds` (a 2-layer projector on its penultimate features);
    returns the steps taken."""
    head = last_linear(model)
    features = []
    hook = head.register_forward_pre_hook(lambda module, args: features.append(args[0]))
    projector = torch.nn.Sequential(torch.nn.Linear(head.in_features, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    optimizer = torch.optim.Adam([*model.parameters(), *projector.parameters()], 1e-3)
    g = torch.Generator().manual_seed(seed)
    view = lambda x: augment.strong(x, augment.flip_crop)  # noqa: E731
    pairs = torch.cat([torch.arange(SIMCLR_BATCH, 2 * SIMCLR_BATCH), torch.arange(SIMCLR_BATCH)])
    model.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x = prep(images[torch.randint(len(images), (SIMCLR_BATCH,), generator=g)])
        features.clear()
        model(torch.cat([view(x), view(x)]))
        z = F.normalize(projector(features[0]), dim=1)
        similarity = (z @ z.T / TEMPERATURE).fill_diagonal_(-1e9)  # an image is not its own positive
        loss = F.cross_entropy(similarity, pairs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    hook.remove()
    return steps


def supervised(model, prep, x: torch.Tensor, y: torch.Tensor, steps: int, aug, seed: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        i = torch.randint(len(x), (BATCH,), generator=g)
        loss = F.cross_entropy(model(aug(prep(x[i]))), y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aug", default="none", help="a train.augment name")
    parser.add_argument("--steps", type=int, default=844, help="supervised steps (844: one epoch's)")
    parser.add_argument("--simclr-s", type=float, default=0.0, help="seconds of contrastive training first")
    parser.add_argument("--mirror", action="store_true", help="average each image's features with its mirror image's")
    parser.add_argument("--mix", type=float, default=0.0,
                        help="blend this share of the model's softmax into the propagated scores")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    d = prepared.load(REPO / "data" / "prepared" / "fashion_mnist", DATASETS["fashion_mnist"], "x_train", "y_train",
                      "x_test", "y_test", "classes")
    x, y = torch.from_numpy(d["x_train"]), d["y_train"]
    train, _ = splits.split_train_valid(y, 0.1, args.seed)
    labeled, _ = splits.labeled_index(train, y, 0.01, args.seed, d["classes"])
    torch.manual_seed(args.seed)
    model = build_model("bn_cnn", 1, 28, len(d["classes"]))
    prep = Normalize(*channel_stats(x[train]))
    cpu = torch.device("cpu")

    start = time.perf_counter()
    steps = simclr(model, prep, x[train], args.simclr_s, args.seed) if args.simclr_s else 0
    supervised(model, prep, x[labeled], torch.from_numpy(y[labeled]), args.steps, getattr(augment, args.aug), args.seed)
    trained = time.perf_counter()
    test_acc = (predict(model, prep, torch.from_numpy(d["x_test"]), cpu, False).argmax(1).numpy() == d["y_test"]).mean()
    propagated = time.perf_counter()
    is_labeled = np.isin(train, labeled)
    labels = torch.from_numpy(np.where(is_labeled, y[train], -1))
    features = embed(model, prep, x[train])
    if args.mirror:
        features = F.normalize(features + embed(model, prep, x[train].flip(3)), dim=1)
    scores = propagate(features, labels, len(d["classes"]), 50, 0.99)
    if args.mix:
        softmax = predict(model, prep, x[train], cpu, False).softmax(1)
        scores = (1 - args.mix) * F.normalize(scores.clamp_min(0), p=1, dim=1) + args.mix * softmax
    targets, weights, _ = pseudo_labels(scores, labels)
    scored = pseudo_label_scores(targets, weights, y[train][~is_labeled], np.flatnonzero(~is_labeled))
    print(json.dumps({**vars(args), "simclr_steps": steps, "test_acc": round(float(test_acc), 4),
                      "lp_acc": round(scored["acc"], 4), "lp_weighted_acc": round(scored["weighted_acc"], 4),
                      "train_s": round(trained - start), "propagate_s": round(time.perf_counter() - propagated)}))


if __name__ == "__main__":
    main()
