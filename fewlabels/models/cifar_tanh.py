"""The CIFAR-10 notebook's CNN with tanh."""
from torch import nn

from fewlabels.models import layers


build = layers.cifar_family(nn.Tanh)
