"""Time to accuracy, without peeking at the test set: each contender trains for a fixed budget of epochs chosen on
validation, and its test accuracy is measured once, after the budget's last epoch.

Both contenders train on the pipeline's train split (54,000 images) and are scored on its validation split (the
other 6,000, all labeled) after each run; a target's budget is the fewest epochs whose run ends at or above the
target on validation. Only then is that run's model scored on the test set: `reached` says whether its test
accuracy is at the target too. No epoch is ever kept or dropped because of a test score.
- project: fewlabels.engine.fit with params.yaml's `train` section under the device's recipe from
  bench/recipes.yaml (`--recipe params`: params.yaml alone; `--set train.key=value` on top), the last epoch
  kept. Its schedule anneals over train.epochs, so each budget is a run of its own: 1 epoch, 2, ... up to
  `--max-epochs` (each run's seconds are the budget's cost).
- notebook: bench.notebook's recipe (constant learning rate: a run stopped after E epochs is the run with
  budget E), one run, scored on validation after every epoch.
Only training time counts: the epochs' training loops (fit's per-epoch `seconds`, which leave out its
validation; the notebook's epoch loop), never a validation or test evaluation.

    python -m bench.time_to_accuracy --device cpu     # targets 92% and 93% -> bench/results/time_to_accuracy.json
"""
import argparse
import sys

import numpy as np
import torch
from ruamel.yaml import YAML
from torch.utils.data import Subset

from bench import notebook
from bench.common import environment, fashion_mnist, fashion_model, params, pipeline_split, save, train_recipe
from fewlabels.data import FitInputs, mask_labels
from fewlabels.engine import fit
from fewlabels.inference import bf16, loss_and_accuracy, predict_trained, resolve_device
from fewlabels.errors import ParamError
from fewlabels.models import MODELS, count_parameters
from fewlabels.params import parse_value, split_override

TARGETS = (0.92, 0.93)  # test accuracy a budget must reach
MAX_EPOCHS = 15         # the longest budget tried per contender
RECIPES = __import__("pathlib").Path(__file__).with_name("recipes.yaml")


def budgets(valid_accs: list[float], targets) -> dict[float, int | None]:
    """target -> the fewest epochs whose run ends at or above it on validation (valid_accs[e - 1]: the run with
    budget e), or None when no budget tried does."""
    return {t: next((e for e, acc in enumerate(valid_accs, 1) if acc >= t), None) for t in targets}


def result_row(target: float, epochs: int | None, seconds: float | None, test_acc: float | None) -> dict:
    return {"target": target, "epochs": epochs, "train_seconds": seconds, "test_acc": test_acc,
            "reached": test_acc is not None and test_acc >= target}


def notebook_contender(device: torch.device, train_idx, valid_idx, targets, max_epochs: int) -> dict:
    """One constant-rate run of the notebooks' recipe, validated after every epoch; the model of each target's
    budget epoch scored on the test set, once."""
    model, opt = notebook.model_and_optimizer(device)
    loader = notebook.train_loader(indices=train_idx)
    valid = Subset(notebook.fashion_mnist_set(True), valid_idx)
    test = notebook.fashion_mnist_set(False)
    history, rows, left = [], [], sorted(targets)
    for epoch in range(1, max_epochs + 1):
        seconds, loss = notebook.train_epoch(model, opt, loader, device)
        history.append({"epoch": epoch, "train_loss": loss, "seconds": seconds,
                        "valid_acc": notebook.accuracy(model, device, valid)})
        print(f"notebook epoch {epoch}: valid acc {history[-1]['valid_acc']:.4f}", flush=True)
        while left and history[-1]["valid_acc"] >= left[0]:
            rows.append(result_row(left.pop(0), epoch, sum(r["seconds"] for r in history),
                                   notebook.accuracy(model, device, test)))
        if not left:
            break
    rows += [result_row(t, None, None, None) for t in left]
    return {"contender": "notebook: torchvision FashionMNIST + ToTensor + DataLoader(64, shuffle) + cnn + Adam 1e-3",
            "budgets": rows, "history": history, "n_params": count_parameters(model), "train_images": len(train_idx)}


def project_contender(model_name: str, cfg, data: dict, targets, max_epochs: int) -> dict:
    """Runs of the recipe with budgets 1, 2, ... epochs until every target's budget is found on validation (or
    max_epochs); each found budget's model scored on the test set, once."""
    p = params()
    train_idx, valid_idx = pipeline_split(data["y_train"])
    x = torch.from_numpy(data["x_train"][train_idx])
    y = mask_labels(data["y_train"][train_idx], np.arange(len(train_idx)))  # all labels kept
    valid = (torch.from_numpy(data["x_train"][valid_idx]), torch.from_numpy(data["y_train"][valid_idx]))
    device = resolve_device(cfg.device)
    runs, rows, left = [], [], sorted(targets)
    for epochs in range(1, max_epochs + 1):
        budget = cfg.model_copy(update={"epochs": epochs, "select_metric": "last"})  # last: no early stop
        torch.manual_seed(p.seed)
        model = fashion_model(model_name)
        result = fit(model, FitInputs(x, y, np.arange(len(x)), np.array([], dtype=np.int64), *valid), budget, p.seed)
        seconds = sum(r["seconds"] for r in result["history"])
        runs.append({"epochs": epochs, "train_seconds": seconds, "valid_acc": result["history"][-1]["valid_acc"]})
        print(f"project, budget {epochs} epochs: valid acc {runs[-1]['valid_acc']:.4f}, {seconds:.1f}s training",
              flush=True)
        while left and runs[-1]["valid_acc"] >= left[0]:
            _, test_acc = loss_and_accuracy(
                predict_trained(model, result, torch.from_numpy(data["x_test"]), device, bf16(device, cfg)),
                torch.from_numpy(data["y_test"]).to(device))
            rows.append(result_row(left.pop(0), epochs, seconds, test_acc))
        if not left:
            break
    rows += [result_row(t, None, None, None) for t in left]
    return {"contender": f"project: fewlabels.engine.fit, model {model_name}", "budgets": rows, "runs": runs,
            "n_params": count_parameters(model), "train_images": len(x), "config": cfg.model_dump()}


def speedups(project: dict, nb: dict) -> dict[str, float | None]:
    """target -> notebook seconds / project seconds, where both reached it on the test set at their budgets."""
    out = {}
    for p_row, n_row in zip(project["budgets"], nb["budgets"]):
        both = p_row["reached"] and n_row["reached"]
        out[f"{p_row['target']:.2f}"] = n_row["train_seconds"] / p_row["train_seconds"] if both else None
    return out


def overrides(pairs: list[str]) -> dict:
    """['train.batch_size=256', 'train.lr=0.01'] -> {'train.batch_size': 256, 'train.lr': 0.01} (values read as YAML)."""
    try:
        return {key: parse_value(text) for key, text in map(split_override, pairs)}
    except ParamError as err:
        sys.exit(f"error: --set: {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda, for both contenders")
    parser.add_argument("--recipe", choices=["cpu", "cuda", "params"],
                        help="the project's recipe in bench/recipes.yaml (default: the device's), or params.yaml as it is")
    parser.add_argument("--model", choices=sorted(MODELS), help="the project's model (default: the recipe's; cnn for params)")
    parser.add_argument("--set", action="append", default=[], metavar="train.KEY=VALUE",
                        help="override a params.yaml train.* key for the project, e.g. --set train.batch_size=256")
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS), help="test accuracies to reach")
    parser.add_argument("--max-epochs", type=int, default=MAX_EPOCHS, help="the longest budget tried")
    parser.add_argument("--skip-notebook", action="store_true", help="project only (to try recipes)")
    parser.add_argument("--name", default="time_to_accuracy", help="results file: bench/results/<name>.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    env = environment(device)
    recipe_name = args.recipe or device.type
    recipe = {"model": "cnn", "set": {}} if recipe_name == "params" else YAML(typ="safe", pure=True).load(RECIPES)[recipe_name]
    model = args.model or recipe["model"]
    settings = recipe["set"] | overrides(args.set)
    cfg = train_recipe(settings | {"train.device": args.device})
    data = fashion_mnist()

    project = project_contender(model, cfg, data, args.targets, args.max_epochs)
    project |= {"recipe": recipe_name, "set": settings}
    nb = None
    if not args.skip_notebook:
        train_idx, valid_idx = pipeline_split(data["y_train"])
        nb = notebook_contender(device, train_idx, valid_idx, args.targets, args.max_epochs)
    result = {"protocol": "fixed budget chosen on validation", "targets": args.targets, "project": project,
              "notebook": nb, "speedup": speedups(project, nb) if nb else None, "environment": env}
    for c in filter(None, (project, nb)):
        for row in c["budgets"]:
            took = ("no budget up to --max-epochs reaches it on validation" if row["epochs"] is None else
                    f"{row['epochs']} epochs, {row['train_seconds']:.1f}s, test acc {row['test_acc']:.4f}"
                    f"{'' if row['reached'] else ' (short of the target on test)'}")
            print(f"{c['contender']}: {row['target']:.0%}: {took}")
    save(args.name, result)


if __name__ == "__main__":
    main()
