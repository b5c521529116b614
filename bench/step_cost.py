"""Cost of one training step, per way of running it: memory layout, torch.compile, threads (issue 20, item 3).

The step is the engine's labeled step on one batch of Fashion-MNIST-sized images (1x28x28, normalised):
forward, cross-entropy, backward, Adam step. Each variant is a fresh model (same seed); its first step (which
compiles under torch.compile) is timed apart: the run's first compile starts from an empty cache, later ones
reuse what matches of it. Then the variants take turns, `--steps` timed steps each after one untimed warm-up
step, `--repeats` times, and the median ms a step is kept. A last row per model and thread count times the
teacher's pass of a semi-supervised step (no gradient, eval mode) at the training batch and at a larger one,
in ms per `--batch` images: what labelling the unlabeled images in bigger batches would save.

    python -m bench.step_cost                       # -> bench/results/step_cost.json
    python -m bench.step_cost --threads 1 2 --name step_cost_quota1   # e.g. inside a 1-CPU cgroup quota
"""
import argparse
import functools
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from bench.common import environment, fashion_model, save

VARIANTS = {  # name -> (memory layout, torch.compile)
    "eager": (torch.contiguous_format, False),
    "channels_last": (torch.channels_last, False),
    "compile": (torch.contiguous_format, True),
    "compile + channels_last": (torch.channels_last, True),
}
TEACHER = "teacher pass, no gradient"  # the variant name of the teacher's row
TEACHER_BATCH = 512  # images per no-gradient pass in the teacher row's larger batch


def train_step(net, opt, x, y) -> None:
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed(fn, n: int) -> float:
    """Seconds per call of fn() over n calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def measure(model_name: str, threads: int, batch: int, steps: int, repeats: int, seed: int) -> list[dict]:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    runs = {}
    for name, (layout, compiled) in VARIANTS.items():
        torch.manual_seed(seed)
        model = fashion_model(model_name).to(memory_format=layout).train()
        net = torch.compile(model) if compiled else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = functools.partial(train_step, net, opt, x.contiguous(memory_format=layout), y)
        first = timed(step, 1)  # builds the graph and compiles it, under torch.compile
        step()
        runs[name] = {"step": step, "first_step_s": first, "ms": []}
    for _ in range(repeats):  # take turns, so a busy moment hits every variant alike
        for run in runs.values():
            run["ms"].append(1000 * timed(run["step"], steps))
    rows = [{"model": model_name, "threads": threads, "batch": batch, "variant": name,
             "ms_per_step": round(statistics.median(r["ms"]), 2), "runs_ms": [round(m, 2) for m in r["ms"]],
             "first_step_s": round(r["first_step_s"], 2)} for name, r in runs.items()]
    torch.manual_seed(seed)
    teacher = fashion_model(model_name).eval()
    big = torch.randn(TEACHER_BATCH, 1, 28, 28, generator=g)
    with torch.no_grad():
        per_batch = {n: 1000 * timed(lambda n=n: teacher(big[:n]), max(1, steps * batch // n)) * batch / n
                     for n in (batch, TEACHER_BATCH)}
    rows.append({"model": model_name, "threads": threads, "batch": batch, "variant": TEACHER,
                 "ms_per_step": round(per_batch[batch], 2),
                 "ms_at_teacher_batch": round(per_batch[TEACHER_BATCH], 2)})  # the same images, in batches of 512
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bn_cnn", "bn_wide"])
    parser.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads()])
    parser.add_argument("--batch", type=int, default=64, help="images a step (the pipeline's train.batch_size)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps a turn")
    parser.add_argument("--repeats", type=int, default=3, help="turns; the median is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="step_cost", help="bench/results/<name>.json")
    args = parser.parse_args()
    env = environment(torch.device("cpu"))
    rows = []
    # compile from nothing, as a fresh machine or container does, not from an earlier run's cache
    with tempfile.TemporaryDirectory(prefix="step_cost_inductor_") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        for model_name in args.models:
            for threads in args.threads:
                rows += measure(model_name, threads, args.batch, args.steps, args.repeats, args.seed)
                for r in rows[-len(VARIANTS) - 1:]:
                    print(f"{model_name} x{threads} threads  {r['variant']:<26} {r['ms_per_step']:7.2f} ms"
                          + (f"  (first step {r['first_step_s']:.1f} s)" if "first_step_s" in r else
                             f"  ({r['ms_at_teacher_batch']:.2f} ms at batch {TEACHER_BATCH})"), flush=True)
    save(args.name, {"environment": env, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
                     "rows": rows})


if __name__ == "__main__":
    main()
