"""`bn_cnn`: three conv blocks 32-64-128 with batch norm, dropout, fc128."""
from torch import nn

from fewlabels.models import layers


def build(channels, size, n_classes, name, dropout=0.25):
    """Three conv blocks (32-64-128, 3x3 same, batch norm, max-pool), fc128 with batch norm and dropout."""
    blocks, width = [], channels
    for out in (32, 64, 128):
        blocks += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        width = out
    features = nn.Sequential(*blocks, nn.Dropout(dropout))
    head = lambda i, o: [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU(), nn.Dropout(dropout)]  # noqa: E731
    return layers.ConvNet(features, [128], head, n_classes, channels, size, name)
