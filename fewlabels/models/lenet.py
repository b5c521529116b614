"""LeNet as the notebooks had it: conv20-conv40 (5x5, unpadded), fc 240-120-84."""
from torch import nn

from fewlabels.models import layers


def build(channels, size, n_classes, name):
    """conv20-conv40 (5x5, unpadded) with max-pooling, then fc 240-120-84-n_classes."""
    features = nn.Sequential(
        nn.Conv2d(channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 40, 5), nn.ReLU(), nn.MaxPool2d(2),
    )
    head = lambda i, o: [nn.Linear(i, o), nn.ReLU()]  # noqa: E731
    return layers.ConvNet(features, [240, 120, 84], head, n_classes, channels, size, name)
