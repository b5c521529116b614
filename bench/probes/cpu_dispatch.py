"""CPU kernel dispatch and reproducibility: does pinning the instruction set make CPU runs identical, and at what cost?

PyTorch picks its CPU kernels by the instruction set it finds (ATen: default / AVX2 / AVX-512, overridable with
ATEN_CPU_CAPABILITY; oneDNN's convolutions: ONEDNN_MAX_CPU_ISA), and different kernels round differently, so the
same params train to different weights on different x86 CPUs. Each configuration below trains the same recipe
in a fresh process (bn_cnn, 10% of the labels, 1 epoch of 844 steps, the pipeline's split and seed) and records the md5 of
the trained weights, the test accuracy and the training seconds. Configurations that give the same md5 as the
unpinned run did not change a single rounding; a pinned configuration that all x86-64 CPUs support (AVX2 for
both libraries) is what would make two machines agree, if nothing else differs between them.

    python -m bench.probes.cpu_dispatch            # -> bench/results/cpu_dispatch.json
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys

import torch

from bench.common import REPO, SPEC, environment, fashion_mnist, fashion_model, params, pipeline_split, save
from fewlabels.data import fit_inputs
from fewlabels.engine import fit
from fewlabels.inference import loss_and_accuracy, predict_trained
from fewlabels.splits import labeled_index

CONFIGS = [  # (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA); None: unset (the best the CPU has)
    (None, None), (None, None), ("avx2", None), ("avx2", "AVX2"), ("avx2", "AVX2"), ("default", "SSE41"),
]
LABELED_FRAC, EPOCHS, MODEL = 0.1, 1, "bn_cnn"


def child() -> None:
    """One training run in this process; prints a JSON line."""
    p = params()
    d = fashion_mnist()
    train_idx, valid_idx = pipeline_split(d["y_train"])
    labeled, unlabeled = labeled_index(train_idx, d["y_train"], LABELED_FRAC, p.seed, SPEC.classes)
    cfg = p.train.model_copy(update={"epochs": EPOCHS, "device": "cpu"})
    torch.manual_seed(p.seed)
    model = fashion_model(MODEL)
    result = fit(model, fit_inputs(d["x_train"], d["y_train"], train_idx, valid_idx, labeled, unlabeled), cfg, p.seed)
    buffer = io.BytesIO()
    torch.save(result["state_dict"], buffer)
    _, acc = loss_and_accuracy(predict_trained(model, result, torch.from_numpy(d["x_test"]), torch.device("cpu"), False),
                               torch.from_numpy(d["y_test"]))
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "weights_md5":
                      hashlib.md5(buffer.getvalue()).hexdigest(), "test_acc": acc,
                      "train_seconds": round(result["train_seconds"], 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    env = environment(torch.device("cpu"))
    runs = []
    for aten, onednn in CONFIGS:
        child_env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
        child_env |= {k: v for k, v in (("ATEN_CPU_CAPABILITY", aten), ("ONEDNN_MAX_CPU_ISA", onednn)) if v}
        out = subprocess.run([sys.executable, "-m", "bench.probes.cpu_dispatch", "--child"], cwd=REPO, env=child_env,
                             capture_output=True, text=True, check=True).stdout
        row = {"ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn, **json.loads(out.strip().splitlines()[-1])}
        print(row, flush=True)
        runs.append(row)
    save("cpu_dispatch", {"recipe": {"model": MODEL, "labeled_frac": LABELED_FRAC, "epochs": EPOCHS},
                          "runs": runs, "environment": env})


if __name__ == "__main__":
    main()
