"""Memory: peak resident set size (RSS) of a CPU training run of the train stage.

In a throwaway copy of the pipeline the data stages prepare Fashion-MNIST (download from the local mirror,
unpack, split, index), then `python -m stages.train <model>` trains on the CPU for `--epochs` epochs with
params.yaml's recipe. Its peak RSS is the kernel's high-water mark for that one process (os.wait4's
ru_maxrss), so nothing is missed between samples and no other process is counted.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import child_env, environment, run, save, scratch_repo

TARGET_GIB = 2.0  # issue #5: peak RSS of a CPU training run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--epochs", type=int, default=1, help="the peak comes in the first epoch; more only take longer")
    parser.add_argument("--name", default="memory", help="results file: bench/results/<name>.json")
    args = parser.parse_args()
    env = environment(torch.device("cpu"))
    py = [sys.executable, "-m"]
    model = args.model
    with tempfile.TemporaryDirectory(prefix="fewlabels-bench-") as tmp:
        repo = scratch_repo(Path(tmp), models=[model], **{"train.epochs": args.epochs, "train.device": "cpu"})
        for stage in ("download", "unpack", "split", "index"):
            run([*py, f"stages.{stage}"], repo)
        cmd = [*py, "stages.train", model]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=repo, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child alone
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if proc.returncode:
            sys.exit(f"error: the train stage failed:\n{output}")
    peak_gib = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    result = {
        "stage": f"train@{model}", "epochs": args.epochs, "peak_rss_gib": peak_gib, "peak_rss_mib": peak_gib * 1024,
        "seconds": seconds, "target_gib": TARGET_GIB, "target_met": peak_gib <= TARGET_GIB,
        "train_stage_says": output.strip().splitlines()[-1],
        "environment": env,
    }
    print(f"train@{model}, {args.epochs} epoch(s) on the CPU: peak RSS {peak_gib * 1024:,.0f} MiB "
          f"(target <= {TARGET_GIB:.0f} GiB), {seconds:.1f}s")
    save(args.name, result)


if __name__ == "__main__":
    main()
