"""Does a fresh student learn more from the graph's labels than the run that made them (issue 29: "iterated rounds
with a fresh (or re-initialised) student")?

For each given `dvc exp run` of label_propagation (an experiment name or rev; its params, model and index files
from the DVC cache, through dvc.api): the trained model embeds the train split (mirror-averaged if the run was),
the run's labeled images' classes diffuse over the kNN graph (the run's k and alpha), and every unlabeled image
takes its pseudo-label as the run's training did (label_propagation.pseudo_labels: its largest score). A new model of the same kind, freshly initialised, then trains with skip's recipe
tuned at the run's fraction (bench.pareto) on all train-split images: the run's labels where it has them, the
graph's elsewhere. Prints a JSON line per run: the graph labels' accuracy against the hidden labels, and the run's
and the student's accuracy on the run's validation labels (what may decide) and on the test set (recorded only).

    python -m bench.probes.fresh_student crisp-jiao aglow-farl chirk-bind --epochs 4   # the 1% runs at 7 epochs
"""
import json

import dvc.api
import numpy as np
import torch

from bench import pareto
from bench.common import REPO
from bench.probes.test_time_lp import runs_parser, start, trained_run
from fewlabels import params as schema
from fewlabels.data import FitInputs
from fewlabels.engine import fit
from fewlabels.inference import Normalize, bf16, loss_and_accuracy, predict_trained, resolve_device
from fewlabels.methods.label_propagation import embed, propagate, pseudo_labels
from fewlabels.models import build_model


def probe(rev: str, model_name: str, epochs: int, d: dict) -> dict:
    raw = dvc.api.params_show(repo=str(REPO), rev=rev)
    run = schema.validate(raw)
    inputs, truth, teacher, record = trained_run(rev, model_name, d)
    features = embed(teacher, Normalize(record["mean"], record["std"]), inputs.train_images, run.ssl.lp_mirror)
    scores = propagate(features, inputs.train_labels, len(d["classes"]), run.ssl.lp_knn, run.ssl.lp_alpha)
    graph, _, _ = pseudo_labels(scores, inputs.train_labels)  # the run's own labels where it has them
    hidden = torch.from_numpy(truth[inputs.unlabeled])
    recipe = [*pareto.recipe_for(run.labeled_frac, pareto.read_tuned()), f"train.epochs={epochs}", "ssl.method=skip"]
    p = schema.validate(schema.override(raw, recipe))
    everything = FitInputs(inputs.train_images, graph, np.arange(len(truth)), np.array([], dtype=np.int64),
                           inputs.valid_images, inputs.valid_labels)  # every image labeled: the graph's labels
    torch.manual_seed(p.seed)  # the student's initial weights, as the train stage draws a run's
    student = build_model(model_name, *d["x_train"].shape[1:3], len(d["classes"]))
    result = fit(student, everything, p.train, p.seed, p.ssl)
    device = resolve_device(p.train.device)

    def accuracy(model, trained, images, labels) -> float:
        logits = predict_trained(model, trained, images, device, bf16(device, p.train))
        return round(loss_and_accuracy(logits, labels.to(device))[1], 4)

    test = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    valid_set = inputs.valid_images, inputs.valid_labels
    return {"rev": rev, "seed": run.seed, "labeled_frac": run.labeled_frac, "student_recipe": recipe,
            "graph_label_acc": round(float((graph[inputs.unlabeled] == hidden).float().mean()), 4),
            "run_valid": accuracy(teacher, record, *valid_set), "student_valid": accuracy(student, result, *valid_set),
            "run_test": accuracy(teacher, record, *test), "student_test": accuracy(student, result, *test),
            "student_train_s": round(result["train_seconds"], 1)}


def main() -> None:
    parser = runs_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=4, help="the student's epochs (train.epochs)")
    args, d = start(parser)
    for rev in args.revs:
        print(json.dumps(probe(rev, args.model, args.epochs, d)), flush=True)


if __name__ == "__main__":
    main()
