"""The CNNs: the notebooks' models and a few more, built for a dataset's channels and image size.

One module per model, named as the model (fewlabels.registry.MODELS), each with a builder `build(channels,
size, n_classes, name)` returning an nn.Module that maps normalised float images [B, C, size, size] to logits
[B, n_classes]; what several share is in layers.py. So dvc.yaml's train@<model> and evaluate@<model> depend on
their own model's file: editing bn_cnn.py reruns nothing of cnn. `python -m fewlabels.models` prints the
README's models table.
"""
from torch import nn

from fewlabels.registry import MODELS


def build_model(name: str, channels: int, size: int, n_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](channels, size, n_classes, name)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def markdown_table(channels: int = 1, size: int = 28) -> str:
    """The README's models table: each registry model, its meaning and its parameters on channels x size^2 images."""
    rows = [f"| name | what | parameters ({size}×{size}×{channels}) |", "| --- | --- | --- |"]
    for name, meaning in MODELS.meanings.items():
        rows.append(f"| `{name}` | {meaning} | {count_parameters(build_model(name, channels, size, 10)):,} |")
    return "\n".join(rows) + "\n"
