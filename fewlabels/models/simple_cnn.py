"""`cnn` without dropout."""
from torch import nn

from fewlabels.models import layers


build = layers.cnn_family(0.0, lambda: nn.MaxPool2d(2))
