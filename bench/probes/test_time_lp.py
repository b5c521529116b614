"""Does label propagation pay at test time too (issue 29: "kNN over the labeled + pseudo-labeled graph at test
time if it pays")?

For each given `dvc exp run` of label_propagation (an experiment name or rev; its model and index files come from
the DVC cache, through dvc.api): the trained model embeds every image of the train split, the run's validation
images and the 10,000 test images (mirror-averaged, as ssl.lp_mirror), the run's labeled training images' classes
diffuse over the kNN graph of all of them (fewlabels.methods.label_propagation.propagate: transductive, the test
images are nodes), and each image takes its largest score. Prints JSON lines per run: the accuracy of the
model's own predictions and of the propagated classes (per graph setting) on the unlabeled training images, on
the run's validation labels (what may decide) and on the test images (recorded, not used to decide).

    python -m bench.probes.test_time_lp crisp-jiao aglow-farl chirk-bind   # the 1% runs at 7 epochs
"""
import argparse
import io
import json
import time

import dvc.api
import numpy as np
import torch

from bench.common import REPO
from fewlabels import prepared
from fewlabels.data import UNLABELED, fit_inputs
from fewlabels.datasets import DATASETS
from fewlabels.inference import Normalize, predict_trained
from fewlabels.methods.label_propagation import embed, propagate
from fewlabels.models import build_model

GRAPHS = ((50, 0.99), (20, 0.99), (50, 0.9))  # (ssl.lp_knn, ssl.lp_alpha): the pipeline's default first


def load(path: str, rev: str):
    """An output of experiment `rev` from the DVC cache: .npy as an array, .pt as a weights-only torch record."""
    with dvc.api.open(path, repo=str(REPO), rev=rev, mode="rb") as f:
        data = io.BytesIO(f.read())
    return np.load(data) if path.endswith(".npy") else torch.load(data, weights_only=True)


def trained_run(rev: str, model_name: str, d: dict):
    """(FitInputs, truth, model, record) of experiment `rev`: its data as the train stage had it (from its split and
    index files), every train-split image's true label (the hidden ones too: for scoring only) and its trained
    `model_name` (the model holding the record's weights)."""
    train, valid, labeled, unlabeled = (load(f"data/{p}.npy", rev) for p in
                                        ("split/train", "index/valid", "index/labeled", "index/unlabeled"))
    inputs = fit_inputs(d["x_train"], d["y_train"], train, valid, labeled, unlabeled)
    record = load(f"models/{model_name}.pt", rev)
    model = build_model(model_name, *d["x_train"].shape[1:3], len(d["classes"]))
    model.load_state_dict(record["state_dict"])
    return inputs, d["y_train"][train], model, record


def probe(rev: str, model_name: str, d: dict) -> list[dict]:
    inputs, train_truth, model, record = trained_run(rev, model_name, d)
    n_train, n_valid, test = len(inputs.train_images), len(inputs.valid_images), torch.from_numpy(d["x_test"])
    images = torch.cat([inputs.train_images, inputs.valid_images, test])
    truth = np.concatenate([train_truth, inputs.valid_labels.numpy(), d["y_test"]])
    # the graph's labels: the run's labeled training images only; validation and test images are unlabeled nodes
    labels = torch.cat([inputs.train_labels, torch.full((n_valid + len(test),), UNLABELED)])
    parts = {"unlabeled": inputs.unlabeled, "valid": n_train + np.arange(n_valid),
             "test": n_train + n_valid + np.arange(len(test))}
    own = predict_trained(model, record, images, torch.device("cpu"), amp=False).argmax(1).numpy()
    features = embed(model, Normalize(record["mean"], record["std"]), images, mirror=True)

    def accuracy(pred):
        return {part: round(float(np.mean(pred[i] == truth[i])), 4) for part, i in parts.items()}

    rows = [{"rev": rev, "predictions": "model", **accuracy(own)}]
    for k, alpha in GRAPHS:
        start = time.perf_counter()
        propagated = propagate(features, labels, len(d["classes"]), k, alpha).argmax(1).numpy()
        rows.append({"rev": rev, "predictions": "propagated", "lp_knn": k, "lp_alpha": alpha, **accuracy(propagated),
                     "propagate_s": round(time.perf_counter() - start, 1)})
    return rows


def runs_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a probe of finished label_propagation runs: their revs, the model, the dataset."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="+", help="experiment names or revs of label_propagation runs")
    parser.add_argument("--model", default="bn_cnn")
    parser.add_argument("--dataset", default="fashion_mnist")
    return parser


def start(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict]:
    """The parsed arguments and the dataset's prepared arrays, on this project's 2 CPU threads."""
    args = parser.parse_args()
    torch.set_num_threads(2)  # this project's CPUs
    return args, prepared.load(REPO / "data" / "prepared" / args.dataset, DATASETS[args.dataset], *prepared.ARRAYS,
                               "classes")


def main() -> None:
    args, d = start(runs_parser(__doc__))
    for rev in args.revs:
        for row in probe(rev, args.model, d):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
