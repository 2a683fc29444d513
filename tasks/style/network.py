"""A slim feed-forward style network (Johnson et al., "Perceptual losses for real-time style
transfer", 2016): strided-conv encoder, residual blocks at quarter resolution, nearest-upsampling
decoder, instance norm throughout. One network per style preset.

It predicts a residual on the colour-transferred input, and its last conv starts at zero, so an
untrained network returns its input: training only has to add the style's texture.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tasks.style.config import StyleNetworkConfig


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, padding_mode="reflect")


def _conv_norm_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [_conv(in_channels, out_channels, kernel, stride), nn.InstanceNorm2d(out_channels, affine=True),
            nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_norm_relu(channels, channels, 3), _conv(channels, channels, 3),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class StyleNetwork(nn.Module):
    """N×3×H×W in [−1, 1] → the stylised images, same shape, in [−1, 1]. Any H and W work (the
    input is reflect-padded to a multiple of 4 and the output cropped back).

    `size` is the working side it was trained at; `preset` the style it learned. Both travel
    with the registered model, so production stylises at the training scale."""

    def __init__(self, config: StyleNetworkConfig, preset: str, seed: int | None = None):
        super().__init__()
        c1, c2, c3 = config.channels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed if seed is None else seed)
            self.encoder = nn.Sequential(*_conv_norm_relu(3, c1, 5), *_conv_norm_relu(c1, c2, 3, stride=2),
                                         *_conv_norm_relu(c2, c3, 3, stride=2))
            self.residuals = nn.Sequential(*[ResidualBlock(c3) for _ in range(config.residual_blocks)])
            self.decoder = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *_conv_norm_relu(c3, c2, 3),
                                         nn.Upsample(scale_factor=2, mode="nearest"), *_conv_norm_relu(c2, c1, 3),
                                         _conv(c1, 3, 5))
        last = self.decoder[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.size = config.size
        self.preset = preset
        self.config = config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected N×3×H×W images, got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % 4, -width % 4
        x = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else images
        residual = self.decoder(self.residuals(self.encoder(x)))[..., :height, :width]
        return (images + residual).clamp(-1.0, 1.0)
