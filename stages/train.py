"""Stage train@<model>: fit one registry model on the labeled (and maybe unlabeled) training images.

Writes models/<model>.pt (best state_dict, what rebuilds the model, the per-epoch history: the same bytes
for the same params on the CPU), runs/<model>.json (what the run was and took: device, seconds, images/s,
and for a method that labels every image, its pseudo-labels' accuracy against the hidden labels: not a DVC
metric) and per-epoch curves with DVCLive in dvclive/<model>/.

After every epoch the run's state goes to .resume/<model>/<key>.pt (fewlabels.resume): a run that
was killed continues from its last finished epoch when rerun with the same params, data and code, and ends
with the weights an uninterrupted run would have had. A successful run removes it.

With dist.nproc_per_node x dist.nnodes > 1 the stage re-executes itself under torchrun (fewlabels.distributed):
every process trains its share; rank 0 alone writes the outputs. On each further host of a multi-host run,
start `python -m stages.train <model> --node-rank i` (i = 1, 2, ...) in a checkout with the same params.yaml
and data: the host that runs dvc is node 0 and holds rank 0.
"""
import argparse
import os
import sqlite3

import torch
from dvclive import Live

from fewlabels import checkpoint, distributed, prepared, resume
from fewlabels.atomic import FULL, write_json
from fewlabels.data import fit_inputs
from fewlabels.datasets import DATASETS
from fewlabels.distributed import Dist
from fewlabels.engine import Hooks, fit
from fewlabels.inference import device_type, resolve_device
from fewlabels.errors import ParamError, UserError
from fewlabels.metrics import pseudo_label_scores
from fewlabels.models import build_model, count_parameters
from fewlabels.splits import labels_used
from stages._common import layout, load_params, run, stage_model

# What the model file keeps of each epoch's row. Its rows are rebuilt with these very key objects: pickle
# writes a repeated key once and refers back to it, so rows whose keys came from an unpickled resume state
# would give other bytes for the same content.
HISTORY = tuple(checkpoint.HISTORY_ROW)
CURVES = HISTORY[1:]  # per epoch, to DVCLive: all but the epoch number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", help="one of params.yaml's models (default: the one in DVC_STAGE)")
    parser.add_argument("--node-rank", type=int, default=0, help="multi-host runs (dist.nnodes > 1): this host's "
                        "place, 0 on the host that runs dvc, 1 to nnodes - 1 on the others")
    args = parser.parse_args()
    p = load_params()
    name = stage_model(args.model, p)
    paths = layout(p.dataset, name)
    if not 0 <= args.node_rank < p.dist.nnodes:
        raise ParamError(f"--node-rank must be in [0, dist.nnodes - 1] = [0, {p.dist.nnodes - 1}], "
                         f"got {args.node_rank}")
    if p.dist.world_size > 1 and not distributed.under_torchrun():
        distributed.check_fits(p.dist, device_type(p.train.device))
        command = distributed.torchrun_command(p.dist, "stages.train", [name, "--node-rank", str(args.node_rank)],
                                               args.node_rank)
        # each process's share of the CPUs (torchrun alone would give each one thread)
        os.environ["OMP_NUM_THREADS"] = str(distributed.cpu_threads(p.dist.nproc_per_node))
        print(f"{name}: {p.dist.world_size} processes, {os.environ['OMP_NUM_THREADS']} threads each: "
              f"{' '.join(command[1:])}", flush=True)
        os.execv(command[0], command)  # this process becomes torchrun; DVC waits for it as before
    if distributed.under_torchrun():
        distributed.die_with_launcher()
    dist = Dist.from_env()
    torch.set_num_threads(distributed.cpu_threads(p.dist.nproc_per_node))
    d = prepared.load(paths.prepared, DATASETS[p.dataset], "x_train", "y_train", "classes")
    x, y, classes = d["x_train"], d["y_train"], d["classes"]

    def indices(path, stage):
        return prepared.load_indices(path, len(y), f"run `dvc repro -f {stage}`")

    # validation: only the images whose labels the run may use (the label budget: fewlabels.splits)
    train_idx, valid_idx = indices(paths.split / "train.npy", "split"), indices(paths.index / "valid.npy", "index")
    labeled, unlabeled = indices(paths.index / "labeled.npy", "index"), indices(paths.index / "unlabeled.npy", "index")
    used = labels_used(y, labeled, valid_idx, classes)
    channels, size = x.shape[1], x.shape[2]
    torch.manual_seed(p.seed)
    model = build_model(name, channels, size, len(classes))
    n_params = count_parameters(model)
    if dist.main:
        print(f"{name}: {n_params:,} parameters; {len(labeled):,} labeled, {len(unlabeled):,} unlabeled images, "
              f"{len(valid_idx):,} validation labels ({used['total']:,} of {used['of']:,} labels); "
              f"{torch.get_num_threads()} CPU threads")

    device = resolve_device(p.train.device)
    store = checkpoint.ResumeStore(paths.resume, resume.state_name(
        p, name, device=device.type, code=checkpoint.project_sources(),
        data=checkpoint.array_digest(x, y, train_idx, valid_idx, labeled, unlabeled)))
    max_bytes = checkpoint.resume_bytes(model.state_dict(), len(x), p.train.epochs)
    saved = store.load(device, max_bytes) if dist.main else None  # rank 0 hands it to the others
    inputs = fit_inputs(x, y, train_idx, valid_idx, labeled, unlabeled)
    try:
        if not dist.main:  # trains its share; writes nothing
            fit(model, inputs, p.train, p.seed, p.ssl, dist=dist)
            distributed.meet(dist)
            return
        # DVC deletes a stage's outputs (these curves too) before it reruns the stage: fit replays a resumed
        # run's finished epochs through log_epoch, so the curves come out as an uninterrupted run's.
        with Live(str(paths.live), dvcyaml=None, save_dvc_exp=False) as live:
            def log_epoch(row, scored):
                for key in CURVES:
                    split, _, metric = key.partition("_")
                    live.log_metric(f"{split}/{metric}" if metric else key, row[key])
                live.next_step()

            hidden = y[train_idx][inputs.unlabeled]  # known to this stage only: fit got them masked
            rounds = []  # the pseudo-labels' scores of each epoch that relabelled the unlabeled images

            def score_pseudo_labels(epoch, targets, weights):
                rounds.append({"epoch": epoch, **pseudo_label_scores(targets, weights, hidden, inputs.unlabeled)})
                acc = "none labelled" if rounds[-1]["acc"] is None else f"{rounds[-1]['acc']:.4f}"
                print(f"pseudo-labels of epoch {epoch}: accuracy {acc} on the unlabeled images, "
                      f"{rounds[-1]['weighted_acc']:.4f} weighted, {rounds[-1]['covered']:.1%} of them with a "
                      "weight", flush=True)

            result = fit(model, inputs, p.train, p.seed, p.ssl, dist=dist,
                         hooks=Hooks(log_epoch, store.save, saved, score_pseudo_labels))
        distributed.meet(dist)  # after DVCLive's last files: the ranks leave within moments of each other
    except checkpoint.Mismatch as err:  # the resume state is not this run's (fit checks it before using it)
        raise store.refuse(err) from None
    except OSError as err:  # DVCLive writes its curves itself, not through fewlabels.atomic
        if err.errno not in FULL:
            raise
        raise UserError(f"{FULL[err.errno]} while DVCLive wrote {paths.live}: free some space and rerun") from None
    except sqlite3.OperationalError as err:  # DVC's records, which DVCLive opens in a DVC repository
        raise UserError(f"DVCLive could not write its records ({err}) for {paths.live}: free some space and "
                        "rerun") from None
    except KeyboardInterrupt:
        if store.saved_epoch is None:
            raise
        raise KeyboardInterrupt(f"no model written; epoch {store.saved_epoch} is kept in {store.path}, "
                                "rerun to continue from there") from None
    finally:
        distributed.shutdown()

    checkpoint.save(paths.model, {  # deterministic: no wall-clock figure, so evaluate does not rerun for nothing
        "model": name, "channels": channels, "size": size, "classes": classes,
        "state_dict": result["state_dict"], "mean": result["mean"], "std": result["std"],
        "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
        "history": [{k: row[k] for k in HISTORY} for row in result["history"]],
    })
    write_json(paths.run, {
        "device": result["device"], "world_size": result["world_size"], "threads": torch.get_num_threads(),
        "n_parameters": n_params,
        "n_labeled": len(labeled), "n_unlabeled": len(unlabeled),
        "labels_used": used,  # train and validation: every label the run could read
        "best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
        "train_seconds": result["train_seconds"], "images_per_s": result["images_per_s"],
        "epoch_seconds": [row["seconds"] for row in result["history"]],
        "pseudo_labels": rounds,  # this process's rounds: a resumed run's earlier ones are not replayed
    })
    store.clear()
    print(f"{name}: best epoch {result['best_epoch']}, {result['train_seconds']:.1f}s training, "
          f"{result['images_per_s']:,.0f} images/s on {result['device']} -> {paths.model}")
    distributed.leave_last(dist)  # several hosts: the others' torchrun first


if __name__ == "__main__":
    run(main)
