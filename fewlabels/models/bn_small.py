"""Three conv blocks 16-32-64 with batch norm, no hidden fc (found by bench/ for speed)."""
from fewlabels.models import layers


build = layers.bn_net((16, 32, 64))  # 29,178 parameters on 28x28x1
