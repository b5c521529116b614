"""The CIFAR-10 notebook's CNN with ReLU."""
from torch import nn

from fewlabels.models import layers


build = layers.cifar_family(nn.ReLU)
