"""VGG-style, for the semi-supervised recipes (GPU-sized)."""
from torch import nn

from fewlabels.models import layers


def build(channels, size, n_classes, name, widths=(64, 128, 256), dropout=0.25):
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
    return layers.ConvNet(features, [], None, n_classes, channels, size, name)
