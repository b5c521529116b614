"""`cnn` with adaptive average pooling to 12x12, so it takes any image size."""
from torch import nn

from fewlabels.models import layers


build = layers.cnn_family(0.25, lambda: nn.AdaptiveAvgPool2d(12))  # 12x12 whatever the input size
