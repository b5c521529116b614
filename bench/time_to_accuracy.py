"""Time to accuracy: training seconds until test accuracy first reaches 92.0% on the real Fashion-MNIST, all labels.

Both contenders in one run, test accuracy measured after every epoch:
- notebook: bench.notebook's recipe on all 60,000 training images (the notebooks hold nothing out);
- project: fewlabels.engine.fit with params.yaml's `train` section under the device's recipe from
  bench/recipes.yaml (`--recipe params`: params.yaml alone; `--set train.key=value` on top) on the
  pipeline's train split (54,000 images; fit validates on the other 6,000 after each epoch, as the train
  stage does), test accuracy from fit's log_epoch callback, stopped as soon as it reaches the target.
Only training time counts: the epochs' training loops (fit's per-epoch `seconds`, which leave out its
validation; the notebook's epoch loop). The test evaluation is never counted. For the project,
`wall_seconds` adds fit's setup and per-epoch validation, to show what they cost.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ruamel.yaml import YAML

from bench import notebook
from bench.common import environment, fashion_mnist, fashion_model, params, pipeline_split, save, train_recipe
from fewlabels.data import FitInputs, mask_labels
from fewlabels.engine import Hooks, fit
from fewlabels.inference import Normalize, bf16, channel_stats, predict, resolve_device
from fewlabels.errors import ParamError
from fewlabels.models import MODELS, count_parameters
from fewlabels.params import parse_value, split_override

TARGET = 0.92  # issue #5: first epoch whose test accuracy reaches 92.0%
TARGET_SECONDS = {"cpu": 40.0, "cuda": 3.0}  # issue #5: project's training seconds to TARGET
NOTEBOOK_MAX_EPOCHS = 15  # the notebook recipe reaches 92% in 5 (measured, CPU and H100)
RECIPES = Path(__file__).with_name("recipes.yaml")


def notebook_contender(device: torch.device, target: float, max_epochs: int) -> dict:
    model, opt = notebook.model_and_optimizer(device)
    loader = notebook.train_loader()
    history, seconds = [], 0.0
    for epoch in range(1, max_epochs + 1):
        epoch_seconds, loss = notebook.train_epoch(model, opt, loader, device)
        seconds += epoch_seconds
        acc = notebook.test_accuracy(model, device)
        history.append({"epoch": epoch, "train_loss": loss, "seconds": epoch_seconds, "test_acc": acc})
        print(f"notebook epoch {epoch}: test acc {acc:.4f}, {seconds:.1f}s training", flush=True)
        if acc >= target:
            break
    return summary("notebook: torchvision FashionMNIST + ToTensor + DataLoader(64, shuffle) + cnn + Adam 1e-3",
                   history, target, n_params=count_parameters(model), train_images=len(loader.dataset))


def project_contender(model_name: str, cfg, data: dict, target: float) -> dict:
    p = params()
    train_idx, valid_idx = pipeline_split(data["y_train"])
    x = torch.from_numpy(data["x_train"][train_idx])
    y = mask_labels(data["y_train"][train_idx], np.arange(len(train_idx)))  # all labels kept
    x_test, y_test = torch.from_numpy(data["x_test"]), torch.from_numpy(data["y_test"])
    device = resolve_device(cfg.device)
    normalize = Normalize(*channel_stats(x)).to(device)  # what fit normalises with
    torch.manual_seed(p.seed)
    model = fashion_model(model_name)  # fit trains this object in place
    history, excluded = [], 0.0

    def log_epoch(row, scored):  # returns True, which stops fit, once the target is reached
        nonlocal excluded
        start = time.perf_counter()
        logits = predict(scored, normalize, x_test, device, bf16(device, cfg))
        acc = (logits.argmax(1).cpu() == y_test).float().mean().item()
        history.append({**row, "test_acc": acc})
        print(f"project epoch {row['epoch']}: test acc {acc:.4f}, "
              f"{sum(r['seconds'] for r in history):.1f}s training", flush=True)
        excluded += time.perf_counter() - start
        return acc >= target

    start = time.perf_counter()
    fit(model, FitInputs(x, y, np.arange(len(x)), np.array([], dtype=np.int64),
                         torch.from_numpy(data["x_train"][valid_idx]), torch.from_numpy(data["y_train"][valid_idx])),
        cfg, p.seed, hooks=Hooks(log_epoch))
    wall = time.perf_counter() - start - excluded
    return summary(f"project: fewlabels.engine.fit, model {model_name}", history, target,
                   n_params=count_parameters(model), train_images=len(x), config=cfg.model_dump(),
                   wall_seconds=wall)


def summary(what: str, history: list[dict], target: float, **extra) -> dict:
    reached = history[-1]["test_acc"] >= target
    seconds = sum(r["seconds"] for r in history)
    return {"contender": what, "reached": reached, "seconds_to_target": seconds if reached else None,
            "train_seconds": seconds, "epochs": len(history), "final_test_acc": history[-1]["test_acc"],
            "images_per_s": extra["train_images"] * len(history) / seconds, "history": history, **extra}


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
    parser.add_argument("--target", type=float, default=TARGET, help="test accuracy to reach")
    parser.add_argument("--notebook-max-epochs", type=int, default=NOTEBOOK_MAX_EPOCHS)
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

    project = project_contender(model, cfg, data, args.target)
    project |= {"recipe": recipe_name, "set": settings}
    nb = None if args.skip_notebook else notebook_contender(device, args.target, args.notebook_max_epochs)
    limit = TARGET_SECONDS[device.type]
    result = {
        "target_test_acc": args.target, "project": project, "notebook": nb,
        "target_seconds": limit,
        "target_met": project["reached"] and project["seconds_to_target"] <= limit,
        "speedup": nb["seconds_to_target"] / project["seconds_to_target"]
        if nb and nb["reached"] and project["reached"] else None,
        "environment": env,
    }
    for c in filter(None, (project, nb)):
        took = f"{c['seconds_to_target']:.1f}s" if c["reached"] else f"not reached ({c['train_seconds']:.1f}s)"
        print(f"{c['contender']}: {took} over {c['epochs']} epochs, final test acc {c['final_test_acc']:.4f}")
    save(args.name, result)


if __name__ == "__main__":
    main()
