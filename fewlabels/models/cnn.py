"""The notebooks' `cnn`: conv32-conv64 (3x3), max-pool, dropout 0.25, fc128."""
from torch import nn

from fewlabels.models import layers


build = layers.cnn_family(0.25, lambda: nn.MaxPool2d(2))
