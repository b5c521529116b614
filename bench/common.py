"""What the benchmarks share: the real Fashion-MNIST from the local mirror, the run's environment, results."""
import gzip
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from typing import NamedTuple
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torchvision

from bench import scratch
from bench.scratch import REPO, child_env
from fewlabels.atomic import write_json
from fewlabels.datasets import DATASETS
from fewlabels.formats import load_idx_dataset
from fewlabels.models import build_model
from fewlabels import params as schema
from fewlabels.errors import ParamError
from fewlabels.params import TrainConfig
from fewlabels.splits import labeled_index, split_train_valid, valid_index

RESULTS = REPO / "bench" / "results"
CACHE = REPO / "bench" / ".cache"  # the torchvision copy of the dataset (git-ignored)
SPEC = DATASETS["fashion_mnist"]


def params() -> schema.Params:
    return schema.load(REPO / "params.yaml")


def train_recipe(overrides: dict) -> TrainConfig:
    """params.yaml's `train` section as the train stage reads it, with {"train.<key>": value} overrides on top."""
    unknown = [k for k in overrides if not k.startswith("train.")]
    if unknown:
        sys.exit(f"error: only train.* keys can be overridden here, got {unknown}")
    raw = schema.read(REPO / "params.yaml")
    for key, value in overrides.items():
        schema.set_key(raw, key, value)
    try:
        return schema.validate(raw).train  # as the train stage builds it
    except ParamError as err:
        sys.exit(f"error: {err}")


def local_mirror() -> Path:
    """The first file:// source of Fashion-MNIST in params.yaml (Debian's dataset-fashion-mnist)."""
    for url in params().data.sources["fashion_mnist"]:
        if url.startswith("file://"):
            return Path(url.removeprefix("file://"))
    sys.exit("error: params.yaml lists no file:// mirror for fashion_mnist; install dataset-fashion-mnist")


def fashion_mnist() -> dict[str, np.ndarray]:
    """x_train/x_test uint8 [N, *SPEC.image_shape] and y_train/y_test int64, parsed from the mirror's gz files."""
    return {k: v.copy() for k, v in load_idx_dataset(local_mirror(), SPEC).items()}  # writable copies


def fashion_model(name: str) -> torch.nn.Module:
    """Registry model `name` for Fashion-MNIST's images and classes, as the train stage builds it."""
    channels, size, _ = SPEC.image_shape
    return build_model(name, channels, size, len(SPEC.classes))


def pipeline_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's train/valid indices (params.yaml seed and split.valid_frac), as the split stage makes them."""
    p = params()
    return split_train_valid(labels, p.split.valid_frac, p.seed)


class RunIndices(NamedTuple):
    """Indices into the training images, as the split and index stages make them for one run."""
    train: np.ndarray  # the train split
    valid: np.ndarray  # the validation split, all of it
    labeled: np.ndarray  # the train images whose labels the run keeps
    unlabeled: np.ndarray  # the rest of the train split
    valid_labeled: np.ndarray  # the validation images whose labels the run may use


def run_indices(labels: np.ndarray, frac: float, seed: int) -> RunIndices:
    """What `dvc exp run -S labeled_frac=FRAC -S seed=SEED` would split and index (split.valid_frac: params.yaml's)."""
    train, valid = split_train_valid(labels, params().split.valid_frac, seed)
    labeled, unlabeled = labeled_index(train, labels, frac, seed, SPEC.classes)
    return RunIndices(train, valid, labeled, unlabeled, valid_index(valid, labels, frac, seed))


def torchvision_root() -> Path:
    """A root for torchvision.datasets.FashionMNIST(download=False): root/FashionMNIST/raw/ holds the
    uncompressed idx files, which is all torchvision 0.29 checks for and reads."""
    raw = CACHE / "torchvision" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for file in SPEC.files.values():
        target = raw / file.name.removesuffix(".gz")
        if not target.exists():
            with gzip.open(local_mirror() / file.name, "rb") as src, open(f"{target}.tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(f"{target}.tmp", target)
    return raw.parent.parent


def scratch_repo(root: Path, **settings) -> Path:
    """A throwaway git + DVC repo at root/repo holding a copy of the pipeline (bench.scratch); `settings` override
    params.yaml keys, dotted ("train.epochs": 1). Fashion-MNIST comes from the local mirror only."""
    p = schema.read(REPO / "params.yaml")
    settings = {"dataset": "fashion_mnist", "data.sources.fashion_mnist": [local_mirror().as_uri()], **settings}
    for key, value in settings.items():
        schema.set_key(p, key, value)
    repo = scratch.copy_pipeline(root / "repo", p)
    scratch.init(repo)
    scratch.commit(repo, "pipeline")  # DVCLive, in the train stage, needs a commit
    return repo


def run(cmd: list[str], cwd: Path) -> float:
    """Run a command in `cwd`; return its wall-clock seconds (exit with its output if it fails)."""
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"error: {shlex.join(cmd)} failed in {cwd}:\n{result.stdout}")
    return seconds


def cpu_seconds() -> tuple[float, float, float]:
    """(monotonic time, CPU seconds every process on the machine has used, CPU seconds this process and its
    waited-for children have used). /proc/stat is not per container: it counts the other sessions too."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return time.monotonic(), busy, sum(r.ru_utime + r.ru_stime for r in own)


_START = cpu_seconds()  # replaced by environment() when a run starts


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages: above ~0.1 before a CPU run, other processes were competing for the cores."""
    return [round(x, 2) for x in os.getloadavg()]


def git_rev() -> str:
    """The commit the code ran from, '+dirty' when the checkout differs from it: what leads a result back to its code."""
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return (rev or "unknown") + ("+dirty" if dirty else "")


def environment(device: torch.device) -> dict:
    """Where and when a run started, the load then, and the command; call it before measuring."""
    global _START
    _START = cpu_seconds()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    return {
        "command": shlex.join(["python", "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_rev": git_rev(),
        "load_average_at_start": load_average(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def save(name: str, result: dict) -> Path:
    (t0, busy0, own0), (t1, busy1, own1) = _START, cpu_seconds()
    result["environment"] |= {
        "load_average_at_end": load_average(),  # includes this run's own threads
        # share of all the machine's cores that other processes kept busy during the run: 0 is a quiet machine
        # (clipped to [0, 1]: over a run of a few ticks the 10 ms clock-tick counts can overshoot)
        "others_cpu_share": min(1.0, max(0.0, round((busy1 - busy0 - (own1 - own0)) / ((t1 - t0) * os.cpu_count()), 3))),
    }
    path = RESULTS / f"{name}.json"
    write_json(path, result)
    print(f"-> {path.relative_to(REPO)}")
    return path
