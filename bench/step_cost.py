"""Cost of one training step, per way of running it: memory layout, bf16 autocast, torch.compile, threads.

The step is the engine's labeled step on one batch of Fashion-MNIST-sized images (1x28x28, normalised):
forward, cross-entropy, backward, Adam step. The variants: eager float32; `channels_last` memory layout;
torch.compile; both; and, only on a CPU with bf16 matrix units (AMX or AVX-512 BF16, the only CPUs the
pipeline autocasts on: fewlabels.inference.cpu_bf16_units), `bf16` (the forward pass under bf16 autocast, the
loss on its logits in float32, as train.cpu_bf16 runs it) and `bf16 + channels_last`. The result's
`bf16_units` says whether the CPU has them.

Each variant is a fresh model (same seed); its first step (which compiles under torch.compile) is timed apart:
the run's first compile starts from an empty cache, later ones reuse what matches of it. Then the variants
take turns, `--steps` timed steps each after one untimed warm-up step, `--repeats` times, and the median ms a
step is kept. A last row per model and thread count times the teacher's pass of a semi-supervised step (no
gradient, eval mode) at the training batch and at a larger one, in ms per `--batch` images: what labelling
the unlabeled images in bigger batches would save.

Each step row also has its achieved rate, `gflops`: the step's FLOPs (`flops_per_step`, per model at
`--batch`: forward and backward as torch's FlopCounterMode counts them, i.e. matrix products and convolutions,
a multiply-add being 2; not the pointwise work or Adam's update, whose time the step still includes) over its
median seconds. `peak_gflops` is what this CPU reaches on a square float32 matrix product (and a bfloat16 one
where it has the units) at each thread count, best of a few; a row's `peak_share` is its `gflops` over the
peak of its dtype (bf16 variants against bfloat16) at its thread count.

    python -m bench.step_cost                       # -> bench/results/step_cost.json
    python -m bench.step_cost --threads 1 2 --name step_cost_quota1   # e.g. inside a 1-CPU cgroup quota
    python -m bench.step_cost --profile "bf16 + channels_last"        # per operator, printed, nothing saved
"""
import argparse
import copy
import functools
import os
import statistics
import tempfile
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

from bench.common import environment, fashion_model, save
from fewlabels.inference import autocast, cpu_bf16_units

CPU = torch.device("cpu")


class Variant(NamedTuple):
    layout: torch.memory_format
    compiled: bool  # under torch.compile
    bf16: bool      # the forward pass under bf16 autocast


VARIANTS = {
    "eager": Variant(torch.contiguous_format, False, False),
    "channels_last": Variant(torch.channels_last, False, False),
    "compile": Variant(torch.contiguous_format, True, False),
    "compile + channels_last": Variant(torch.channels_last, True, False),
    "bf16": Variant(torch.contiguous_format, False, True),
    "bf16 + channels_last": Variant(torch.channels_last, False, True),
}
TEACHER = "teacher pass, no gradient"  # the variant name of the teacher's row
TEACHER_BATCH = 512  # images per no-gradient pass in the teacher row's larger batch
PEAK_SIZE = 2048  # rows = columns of the square matrices whose product measures the peak
PEAK_REPEATS = 5  # timed products per dtype and thread count; the fastest is kept
PEAK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def train_step(net, opt, x, y, bf16: bool) -> None:
    with autocast(CPU, bf16):
        logits = net(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed(fn, n: int) -> float:
    """Seconds per call of fn() over n calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def variant_step(model_name: str, v: Variant, x, y, seed: int):
    """One training step of a fresh `model_name` (seeded) run as variant `v`, on the batch (x, y), as a callable."""
    torch.manual_seed(seed)
    model = fashion_model(model_name).to(memory_format=v.layout).train()
    net = torch.compile(model) if v.compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return functools.partial(train_step, net, opt, x.contiguous(memory_format=v.layout), y, v.bf16)


def step_flops(net, x, y) -> int:
    """FLOPs of one forward and backward pass of `net` on the batch (x, y) with cross-entropy, as FlopCounterMode
    counts them: matrix products and convolutions, 2 a multiply-add. `net` itself is left as it was."""
    net = copy.deepcopy(net)  # the backward pass fills its gradients, a BatchNorm's forward its running stats
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    return counter.get_total_flops()


def matmul_gflops(dtype: torch.dtype, size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS) -> float:
    """GFLOP/s of the fastest of `repeats` products of two size x size `dtype` matrices, at torch's current
    thread count: the CPU's practical peak for that dtype."""
    a, b = torch.randn(2, size, size).to(dtype)
    a @ b  # warm-up: oneDNN picks and prepares its kernel on the first call
    seconds = min(timed(lambda: a @ b, 1) for _ in range(repeats))
    return 2 * size ** 3 / seconds / 1e9


def peak_share(row: dict, peaks: dict[str, float]) -> float:
    """A step row's `gflops` over the peak GFLOP/s (`peaks`: dtype name -> GFLOP/s at the row's thread count)
    of the dtype its variant multiplies in."""
    return row["gflops"] / peaks["bfloat16" if VARIANTS[row["variant"]].bf16 else "float32"]


def measure(model_name: str, threads: int, batch: int, steps: int, repeats: int, seed: int,
            variants: dict[str, Variant], flops: int, peaks: dict[str, float]) -> list[dict]:
    """Rows of `variants`' steps and the teacher's pass; `flops`: step_flops of the model at `batch`; `peaks`:
    matmul_gflops per dtype name at `threads`."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    runs = {}
    for name, v in variants.items():
        step = variant_step(model_name, v, x, y, seed)
        first = timed(step, 1)  # builds the graph and compiles it, under torch.compile
        step()
        runs[name] = {"step": step, "first_step_s": first, "ms": []}
    for _ in range(repeats):  # take turns, so a busy moment hits every variant alike
        for run in runs.values():
            run["ms"].append(1000 * timed(run["step"], steps))
    rows = []
    for name, r in runs.items():
        ms = statistics.median(r["ms"])
        row = {"model": model_name, "threads": threads, "batch": batch, "variant": name,
               "ms_per_step": round(ms, 2), "runs_ms": [round(m, 2) for m in r["ms"]],
               "first_step_s": round(r["first_step_s"], 2),
               "gflops": round(flops / (ms / 1000) / 1e9, 2)}  # FLOPs a step over seconds a step, in 1e9
        rows.append(row | {"peak_share": round(peak_share(row, peaks), 4)})
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


def operator_shares(model_name: str, variant: Variant, threads: int, batch: int, steps: int, seed: int,
                    top: int = 12) -> list[tuple[str, float]]:
    """The `top` operators of an eager `variant` step by their share of the step's self CPU time (torch.profiler
    over `steps` steps after 5 untimed ones): where a step's time goes besides its matrix products."""
    torch.set_num_threads(threads)
    step = variant_step(model_name, variant, torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,)), seed)
    for _ in range(5):
        step()
    with profile() as prof:
        for _ in range(steps):
            step()
    ops = prof.key_averages()
    total = sum(op.self_cpu_time_total for op in ops)
    return [(op.key, op.self_cpu_time_total / total)
            for op in sorted(ops, key=lambda op: -op.self_cpu_time_total)[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bn_cnn", "bn_wide"])
    parser.add_argument("--threads", nargs="+", type=int, default=[torch.get_num_threads()])
    parser.add_argument("--batch", type=int, default=64, help="images a step (the pipeline's train.batch_size)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps a turn")
    parser.add_argument("--repeats", type=int, default=3, help="turns; the median is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="step_cost", help="bench/results/<name>.json")
    parser.add_argument("--profile", choices=[n for n, v in VARIANTS.items() if not v.compiled],
                        help="instead: print where one eager variant's step spends its time, per operator")
    args = parser.parse_args()
    if args.profile:
        for model_name in args.models:
            for threads in args.threads:
                print(f"{model_name} x{threads} threads  {args.profile}: share of the step's self CPU time")
                for op, share in operator_shares(model_name, VARIANTS[args.profile], threads, args.batch,
                                                 args.steps, args.seed):
                    print(f"  {op:<45} {share:6.1%}")
        return
    env = environment(CPU)
    bf16_units = cpu_bf16_units()
    variants = {name: v for name, v in VARIANTS.items() if bf16_units or not v.bf16}
    dtypes = ["float32", "bfloat16"] if bf16_units else ["float32"]
    peaks = {}  # str(threads) -> dtype name -> GFLOP/s
    for threads in args.threads:
        torch.set_num_threads(threads)
        peaks[str(threads)] = {d: round(matmul_gflops(PEAK_DTYPES[d]), 1) for d in dtypes}
        print(f"matmul peak x{threads} threads  " + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in
                                                              peaks[str(threads)].items()), flush=True)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.zeros(args.batch, dtype=torch.long)  # only the shapes count
    flops = {model_name: step_flops(fashion_model(model_name).train(), x, y) for model_name in args.models}
    rows = []
    # compile from nothing, as a fresh machine or container does, not from an earlier run's cache
    with tempfile.TemporaryDirectory(prefix="step_cost_inductor_") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        for model_name in args.models:
            for threads in args.threads:
                new = measure(model_name, threads, args.batch, args.steps, args.repeats, args.seed, variants,
                              flops[model_name], peaks[str(threads)])
                for r in new:
                    print(f"{model_name} x{threads} threads  {r['variant']:<26} {r['ms_per_step']:7.2f} ms"
                          + (f"  {r['gflops']:6.2f} GFLOP/s ({r['peak_share']:.1%} of peak)"
                             f"  (first step {r['first_step_s']:.1f} s)" if "first_step_s" in r else
                             f"  ({r['ms_at_teacher_batch']:.2f} ms at batch {TEACHER_BATCH})"), flush=True)
                rows += new
    save(args.name, {"environment": env, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
                     "bf16_units": bf16_units, "flops_per_step": flops, "peak_gflops": peaks, "rows": rows})


if __name__ == "__main__":
    main()
