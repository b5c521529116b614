"""Throughput: the notebooks' data path vs the project's training path, in the same run.

Same model (`cnn`), same batch size, same number of timed steps after the same warm-up. The project
contender is `fewlabels.engine.fit` itself (params.yaml's `train` recipe, one epoch of exactly `steps`
batches), so its figure is the engine's own images/s. The data path alone (no model) is timed for both
too: the notebooks' DataLoader + ToTensor vs the engine's in-memory loader + Normalize.
Contenders alternate `--repeats` times and the median is kept, which damps noise from other processes.
"""
import argparse
import dataclasses
import itertools
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench import notebook
from bench.common import environment, fashion_mnist, fashion_model, save, train_recipe
from fewlabels.data import FitInputs, InMemoryImages, PureBatchSampler, collate_pure
from fewlabels.engine import fit
from fewlabels.inference import Normalize, channel_stats, resolve_device

TARGET_RATIO = 1.7  # issue #5: project / notebook training images/s at batch 64 on CPU


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def notebook_images_per_s(steps: int, warmup: int, batch_size: int, device: torch.device, train: bool) -> float:
    """Images/s of the notebooks' loop (train=True) or of its data path alone: batches fetched and moved to the device."""
    batches = itertools.chain.from_iterable(itertools.repeat(notebook.train_loader(batch_size)))  # epoch after epoch
    model, opt = notebook.model_and_optimizer(device) if train else (None, None)  # a new model is in train mode
    n = 0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start, n = time.perf_counter(), 0
        images, labels = next(batches)
        if train:
            notebook.train_step(model, opt, images, labels, device)
        else:
            images, labels = images.to(device), labels.to(device)
        n += len(labels)
    sync(device)
    return n / (time.perf_counter() - start)


def tiled(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images (the training set repeated when n is larger), all labeled."""
    idx = torch.arange(n) % len(x)
    return x[idx], y[idx]


def project_images_per_s(x, y, x_valid, y_valid, steps: int, warmup: int, cfg, seed: int) -> float:
    """The engine's images/s: fit() for one epoch of exactly `steps` batches, after a warm-up fit of `warmup` batches."""
    torch.manual_seed(seed)
    model = fashion_model("cnn")
    for n_steps in (warmup, steps):
        xs, ys = tiled(x, y, n_steps * cfg.batch_size)
        result = fit(model, FitInputs(xs, ys, np.arange(len(xs)), np.array([], dtype=np.int64), x_valid, y_valid), cfg, seed)
    return result["images_per_s"]


def project_data_images_per_s(x, y, steps: int, warmup: int, batch_size: int, device: torch.device, seed: int) -> float:
    """The engine's data path alone, built as fit() builds it: uint8 batches by tensor indexing, then Normalize."""
    xs, ys = tiled(x, y, (warmup + steps) * batch_size)
    normalize = Normalize(*channel_stats(xs)).to(device)
    sampler = PureBatchSampler(np.arange(len(xs)), np.array([], dtype=np.int64), batch_size, seed, device=device)
    loader = DataLoader(InMemoryImages(xs.to(device), ys.to(device)), batch_sampler=sampler, collate_fn=collate_pure)
    n = 0
    for i, batch in enumerate(loader):
        if i == warmup:
            sync(device)
            start, n = time.perf_counter(), 0
        normalize(batch.x)
        n += len(batch.y)
    sync(device)
    return n / (time.perf_counter() - start)


def compare(notebook_runs: list[float], project_runs: list[float]) -> dict:
    nb, pr = statistics.median(notebook_runs), statistics.median(project_runs)
    return {"notebook_images_per_s": nb, "project_images_per_s": pr, "ratio": pr / nb,
            "notebook_runs": notebook_runs, "project_runs": project_runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=notebook.BATCH_SIZE)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per contender and run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per contender; the median is kept")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (the notebook moves each batch there)")
    parser.add_argument("--name", default="throughput", help="results file: bench/results/<name>.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    env = environment(device)
    # params.yaml's recipe, one epoch at the notebook's batch size, on the notebook's device
    cfg = train_recipe({"train.batch_size": args.batch_size, "train.epochs": 1, "train.device": args.device})
    data = fashion_mnist()
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    x_valid, y_valid = torch.from_numpy(data["x_test"][:1024]), torch.from_numpy(data["y_test"][:1024])  # fit validates once; untimed
    shape = (args.steps, args.warmup, args.batch_size)

    train_nb, train_pr, data_nb, data_pr = [], [], [], []
    for r in range(args.repeats):
        train_nb.append(notebook_images_per_s(*shape, device, train=True))
        train_pr.append(project_images_per_s(x, y, x_valid, y_valid, args.steps, args.warmup, cfg, seed=r))
        data_nb.append(notebook_images_per_s(*shape, device, train=False))
        data_pr.append(project_data_images_per_s(x, y, *shape, device, seed=r))
        print(f"run {r + 1}/{args.repeats}: train {train_nb[-1]:,.0f} vs {train_pr[-1]:,.0f} images/s, "
              f"data path {data_nb[-1]:,.0f} vs {data_pr[-1]:,.0f} images/s (notebook vs project)", flush=True)

    train, data_path = compare(train_nb, train_pr), compare(data_nb, data_pr)
    result = {
        "model": "cnn", "batch_size": args.batch_size, "steps": args.steps, "warmup_steps": args.warmup,
        "repeats": args.repeats, "train": train, "data_path": data_path,
        "target_ratio": TARGET_RATIO, "target_met": train["ratio"] >= TARGET_RATIO,
        "project_recipe": dataclasses.asdict(cfg),
        "environment": env,
    }
    print(f"training: notebook {train['notebook_images_per_s']:,.0f} images/s, project "
          f"{train['project_images_per_s']:,.0f} images/s, ratio {train['ratio']:.2f} (target >= {TARGET_RATIO})")
    print(f"data path alone: notebook {data_path['notebook_images_per_s']:,.0f} images/s, project "
          f"{data_path['project_images_per_s']:,.0f} images/s, ratio {data_path['ratio']:.1f}")
    save(args.name, result)


if __name__ == "__main__":
    main()
