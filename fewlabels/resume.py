"""The names of the train stage's resume states, and the sweep of those no run will continue.

A state is <root>/<model>/<settings>-<inputs>.pt (fewlabels.checkpoint.ResumeStore writes it): <settings>
digests the params a training run of that model reads, <inputs> its data, code and device. A run continues
only the state with both its digests, and a finished run of a model deletes all its states. The check
stage, which runs on every edit of params.yaml, deletes the states whose settings params.yaml no longer
has: no run will continue them, and when DVC restores a train stage from its run cache no train code runs
that could. Torch-free, so the check stage stays cheap.
"""
import hashlib
import json
from pathlib import Path


def digest(**parts) -> str:
    """16 hex digits of the JSON of `parts`: equal parts, equal digest."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def settings_key(p, model: str) -> str:
    """The digest of what a training run of `model` reads from params.yaml (`p`, a fewlabels.params.Params)."""
    return digest(model=model, seed=p.seed, labeled_frac=p.labeled_frac, train=p.train.model_dump(),
                  ssl=p.ssl.model_dump(), world=p.dist.world_size)


def state_prefix(p, model: str) -> str:
    """The start of the name of every state of `model` under params `p`: its settings digest and a dash."""
    return settings_key(p, model) + "-"


def state_name(p, model: str, **inputs) -> str:
    """The name (without .pt) of the state of `model` under params `p` on `inputs` (data, code, device)."""
    return state_prefix(p, model) + digest(**inputs)


def sweep(root: Path, p) -> list[Path]:
    """Delete the files under root/<model>/ that are no state (or state being written) of params `p`, and
    the folders left empty; return the deleted files. A symbolic link among the folders is left alone:
    nothing outside the checkout is touched (the train stage refuses it with one line)."""
    if not root.is_dir() or root.is_symlink():
        return []
    removed = []
    for folder in sorted(f for f in root.iterdir() if f.is_dir() and not f.is_symlink()):
        prefix = state_prefix(p, folder.name) if folder.name in p.models else None
        for f in sorted(folder.iterdir()):
            if f.is_dir() and not f.is_symlink():
                continue  # not written by the train stage: not ours to delete
            if prefix is None or not f.name.lstrip(".").startswith(prefix):  # ".<name>.<pid>.tmp": a write
                f.unlink()
                removed.append(f)
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(root.iterdir()):
        root.rmdir()
    return removed
