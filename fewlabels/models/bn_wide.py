"""`bn_small` 32-64-128 wide: `bn_cnn` without its fc128 and dropout."""
from fewlabels.models import layers


build = layers.bn_net((32, 64, 128))  # 104,426 parameters on 28x28x1
