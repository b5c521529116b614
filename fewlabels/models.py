"""The CNNs: the notebooks' models and a few more, built for a dataset's channels and image size.

Each builder takes (channels, size, n_classes) and returns an nn.Module mapping normalised
float images [B, C, size, size] to logits [B, n_classes].
"""
import torch
from torch import nn

from fewlabels.registry import MODELS


def _flat_features(features: nn.Module, channels: int, size: int, name: str) -> int:
    """Number of features `features` outputs for one image; a clear error if the image is too small."""
    # Probe in eval mode: batch norm then neither needs batch statistics (one image has none)
    # nor updates its running statistics with the zeros.
    training = features.training
    features.eval()
    with torch.no_grad():
        try:
            return features(torch.zeros(1, channels, size, size)).numel()
        except RuntimeError as err:  # a conv or pool kernel larger than what is left of the image
            raise ValueError(f"model {name} cannot take {channels}x{size}x{size} images: {err}") from None
        finally:
            features.train(training)


class ConvNet(nn.Module):
    """A feature extractor followed by a classifier head on its flattened output."""

    # Seven arguments: the parts (features, head) and the shapes they are built for; the registry's builders pass them.
    def __init__(self, features: nn.Module, head_sizes: list[int], head_layer, n_classes: int,
                 channels: int, size: int, name: str):
        super().__init__()
        self.features = features
        layers, width = [nn.Flatten()], _flat_features(features, channels, size, name)
        for hidden in head_sizes:
            layers += head_layer(width, hidden)
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x):
        return self.classifier(self.features(x))


def _cnn(dropout: float, pool):
    """The notebooks' `cnn`: conv32-conv64 (3x3), pool, fc128, with optional dropout."""
    def build(channels, size, n_classes, name):
        features = nn.Sequential(
            nn.Conv2d(channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            pool(), nn.Dropout(dropout),
        )
        head = lambda i, o: [nn.Linear(i, o), nn.ReLU(), nn.Dropout(dropout)]  # noqa: E731
        return ConvNet(features, [128], head, n_classes, channels, size, name)
    return build


def bn_cnn(channels, size, n_classes, name, dropout=0.25):
    """Three conv blocks (32-64-128, 3x3 same, batch norm, max-pool), fc128 with batch norm and dropout."""
    blocks, width = [], channels
    for out in (32, 64, 128):
        blocks += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        width = out
    features = nn.Sequential(*blocks, nn.Dropout(dropout))
    head = lambda i, o: [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU(), nn.Dropout(dropout)]  # noqa: E731
    return ConvNet(features, [128], head, n_classes, channels, size, name)


def lenet(channels, size, n_classes, name):
    """conv20-conv40 (5x5, unpadded) with max-pooling, then fc 240-120-84-n_classes."""
    features = nn.Sequential(
        nn.Conv2d(channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 40, 5), nn.ReLU(), nn.MaxPool2d(2),
    )
    head = lambda i, o: [nn.Linear(i, o), nn.ReLU()]  # noqa: E731
    return ConvNet(features, [240, 120, 84], head, n_classes, channels, size, name)


def _cifar(act):
    """The CIFAR-10 notebook CNN: conv10-conv20-conv48 (3x3, unpadded), each max-pooled, fc100."""
    def build(channels, size, n_classes, name):
        blocks, width = [], channels
        for out in (10, 20, 48):
            blocks += [nn.Conv2d(width, out, 3), act(), nn.MaxPool2d(2)]
            width = out
        head = lambda i, o: [nn.Linear(i, o), act()]  # noqa: E731
        return ConvNet(nn.Sequential(*blocks), [100], head, n_classes, channels, size, name)
    return build


def _bn_net(widths: tuple[int, ...]):
    """Conv blocks (3x3 same, batch norm, ReLU, max-pool 2) of the given widths, then one linear layer.

    Found by bench/ for time to accuracy on the CPU: cheap per image, and batch norm trains fast.
    """
    def build(channels, size, n_classes, name):
        blocks, width = [], channels
        for out in widths:
            blocks += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            width = out
        return ConvNet(nn.Sequential(*blocks), [], None, n_classes, channels, size, name)
    return build


def vgg_bn(channels, size, n_classes, name, widths=(64, 128, 256), dropout=0.25):
    """VGG-style: per width two 3x3 conv + batch norm + ReLU, then max-pool 2; global average pool, dropout, linear.

    Wider and deeper than the notebooks' CNNs, for the semi-supervised recipes (GPU-sized: ~1.1M parameters).
    """
    blocks, width = [], channels
    for out in widths:
        for _ in range(2):
            blocks += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            width = out
        blocks.append(nn.MaxPool2d(2))
    features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Dropout(dropout))
    return ConvNet(features, [], None, n_classes, channels, size, name)


# The registry's models (fewlabels.registry.MODELS), each a builder (channels, size, n_classes, name) -> nn.Module
cnn = _cnn(0.25, lambda: nn.MaxPool2d(2))
adaptive_cnn = _cnn(0.25, lambda: nn.AdaptiveAvgPool2d(12))  # 12x12 whatever the input size
simple_cnn = _cnn(0.0, lambda: nn.MaxPool2d(2))
cifar_relu = _cifar(nn.ReLU)
cifar_tanh = _cifar(nn.Tanh)
bn_small = _bn_net((16, 32, 64))   # 29,178 parameters on 28x28x1
bn_wide = _bn_net((32, 64, 128))   # 104,426 parameters on 28x28x1: bn_cnn without its fc128 and dropout


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


if __name__ == "__main__":
    print(markdown_table(), end="")
