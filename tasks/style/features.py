"""A fixed, seeded, random-weight multi-scale CNN whose Gram matrices describe style.

No trained weights: wide random filters already span a rich set of local statistics, and their
Gram matrices at several scales capture texture (Ustyuzhaninov et al., "What does it take to
generate natural textures?", ICLR 2017; He et al., 2016).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_LEAKY_SLOPE = 0.2


class RandomFeatureNet(nn.Module):
    """Blocks of 3×3 conv → LeakyReLU, each block after the first preceded by a 2×2 average pool.

    Weights are drawn once from ``torch.Generator().manual_seed(seed)`` with He scaling, so
    activations keep their magnitude from block to block, and are never trained.
    Input: N×3×H×W in [−1, 1]. Output: one feature map per block, finest first.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), seed: int = 0):
        super().__init__()
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {channels}")
        generator = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        in_channels = 3
        for out_channels in channels:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="reflect")
            fan_in = in_channels * 9
            gain = math.sqrt(2.0 / (1.0 + _LEAKY_SLOPE ** 2))
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * gain / math.sqrt(fan_in))
                # Small random biases spread the ReLU thresholds so units are not all symmetric at 0.
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
            self.convs.append(conv)
            in_channels = out_channels
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = images
        for index, conv in enumerate(self.convs):
            if index > 0:
                x = F.avg_pool2d(x, 2)
            x = F.leaky_relu(conv(x), _LEAKY_SLOPE)
            features.append(x)
        return features


def gram_matrix(features: torch.Tensor, centred: bool = False) -> torch.Tensor:
    """N×C×H×W features → N×C×C Gram matrices, normalised by C·H·W.

    ``centred`` subtracts each channel's spatial mean first (a covariance), so the matrix
    describes texture rather than the average response, which bright flat styles dominate.
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    if centred:
        flat = flat - flat.mean(dim=2, keepdim=True)
    return flat @ flat.transpose(1, 2) / (c * h * w)
