"""What the models (fewlabels/models/<name>.py) are built from: a feature extractor and a classifier head
(ConvNet), and the families several models share, each a function of the few numbers that tell its members
apart.

Each builder takes (channels, size, n_classes, name) and returns an nn.Module mapping normalised float images
[B, C, size, size] to logits [B, n_classes].
"""
import torch
from torch import nn


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


def cnn_family(dropout: float, pool):
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


def cifar_family(act):
    """The CIFAR-10 notebook CNN: conv10-conv20-conv48 (3x3, unpadded), each max-pooled, fc100."""
    def build(channels, size, n_classes, name):
        blocks, width = [], channels
        for out in (10, 20, 48):
            blocks += [nn.Conv2d(width, out, 3), act(), nn.MaxPool2d(2)]
            width = out
        head = lambda i, o: [nn.Linear(i, o), act()]  # noqa: E731
        return ConvNet(nn.Sequential(*blocks), [100], head, n_classes, channels, size, name)
    return build


def bn_net(widths: tuple[int, ...]):
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
