"""Run under torchrun by tests/test_distributed.py: one rank of a 2-process fit() on hidden-label data,
recording what that rank saw and held. Writes <out>/rank<r>.json.

Recorded: every batch the loop drew (kind, image indices, labels), the labels in the dataset the engine
built, a digest of the weights and of the pseudo-labelling statistics (FlexMatch's and distribution
alignment's) after every optimizer step, and on rank 0 a single-process validation of the returned weights.
"""
import hashlib
import json
import sys
from pathlib import Path

import torch

from fewlabels import engine, inference
from fewlabels.data import FitInputs, collate_pure, mask_labels, one_pass_batches
from fewlabels.distributed import Dist
from fewlabels.models import build_model
from fewlabels.params import SSLConfig, TrainConfig
from test_label_hiding import hidden_label_data, indices_of


def tensors(state: dict) -> list:
    """Every tensor of a nested state dict, in order (the method's statistics and its alignment's)."""
    return [t for value in state.values() if value is not None
            for t in (tensors(value) if isinstance(value, dict) else [value])]


def main() -> None:
    out = Path(sys.argv[1])
    dist = Dist.from_env()
    record = {"batches": [], "steps": [], "statistics": [], "dataset_labels": None}
    current = {"epoch": 0}

    def recording_collate(fetched):
        batch = collate_pure(fetched)
        record["batches"].append({"epoch": current["epoch"], "labeled": batch.labeled, "indices": indices_of(batch.x),
                                  "labels": batch.y.tolist() if batch.labeled else None})
        return batch

    train_epoch, step, dataset = engine.train_epoch, engine._step, engine.InMemoryImages

    def recording_train_epoch(state, loop, epoch):
        current["epoch"] = epoch
        return train_epoch(state, loop, epoch)

    def recording_step(state):
        step(state)
        weights = b"".join(p.detach().cpu().numpy().tobytes() for p in state.model.parameters())
        record["steps"].append(hashlib.sha256(weights).hexdigest())
        record["statistics"].append(hashlib.sha256(b"".join(
            t.cpu().numpy().tobytes() for t in tensors(state.method.state_dict()))).hexdigest())

    class RecordingImages(dataset):
        def __init__(self, images, labels):
            record["dataset_labels"] = labels.tolist()
            super().__init__(images, labels)

    engine.collate_pure, engine.train_epoch, engine._step = recording_collate, recording_train_epoch, recording_step
    engine.InMemoryImages = RecordingImages

    x, y, labeled, unlabeled = hidden_label_data(n=120)
    torch.manual_seed(1)
    vx, vy = x[:40], torch.arange(40) % 10
    # a budget of one pass over the labeled images: every index once per epoch, shared between the ranks; the
    # best valid_acc epoch kept, float32 and the default layout, as the test's single-process comparison assumes
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", amp=False, cpu_bf16=False, channels_last=False, ema=0.9,
                      augment="flip_crop", select_metric="valid_acc",
                      epoch_steps=one_pass_batches(len(labeled), 16, dist.world_size))
    ssl = SSLConfig(method="flexmatch", dist_align=True, threshold=0.3, warmup_epochs=0, unlabeled_ratio=None)
    model = build_model("bn_small", 1, 28, 10)
    result = engine.fit(model, FitInputs(x, mask_labels(y, labeled), labeled, unlabeled, vx, vy), cfg, 0, ssl, dist=dist)
    record.update(labeled=labeled.tolist(), unlabeled=unlabeled.tolist(), history=result["history"])
    if dist.main:  # the same weights in one plain process: the validation numbers must equal rank 0's
        logits = inference.predict_trained(build_model("bn_small", 1, 28, 10), result, vx, torch.device("cpu"), amp=False)
        record["single_process_valid"] = list(inference.loss_and_accuracy(logits, vy))
    (out / f"rank{dist.rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
