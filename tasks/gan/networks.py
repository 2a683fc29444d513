"""StyleGAN2-style networks: mapping network, modulated convolutions with noise inputs, a
skip-architecture generator, and a residual discriminator with minibatch standard deviation.

Weights use the equalised learning rate of StyleGAN: stored as N(0, 1) and scaled by
1/sqrt(fan_in) at run time, so Adam treats every layer alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tasks.gan.config import GanConfig

LRELU_GAIN = math.sqrt(2.0)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate and an optional learning-rate multiplier."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_multiplier: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_multiplier))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.lr_multiplier = lr_multiplier
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_multiplier)
        return F.leaky_relu(out, 0.2) * LRELU_GAIN if self.activate else out


class MappingNetwork(nn.Module):
    """z → w: pixel-normalised z through an MLP whose learning rate is 100× lower; tracks the
    mean w for truncation."""

    def __init__(self, z_dim: int, w_dim: int, layers: int, w_avg_beta: float = 0.995):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_multiplier=0.01, activate=True)
                                   for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.w_avg_beta = w_avg_beta

    def forward(self, z: torch.Tensor, truncation: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        w = self.net(z)
        if update_w_avg:
            self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation != 1.0:
            w = self.w_avg.lerp(w, truncation)
        return w


class ModulatedConv2d(nn.Module):
    """3×3 (or 1×1) convolution whose input channels are scaled by a style from w, then
    demodulated per sample. Written as scale → shared conv → rescale, which equals the fused
    per-sample-weight form and runs as one ordinary convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int, demodulate: bool = True,
                 upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # N × C_in
        weight = self.weight * self.weight_gain
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            # σ_j = sqrt(Σ_i,k (w_jik s_i)²) per sample and output channel.
            sigma_sq = torch.einsum("oikl,ni->no", weight.square(), styles.square())
            out = out * torch.rsqrt(sigma_sq + 1e-8)[:, :, None, None]
        return out


class StyledLayer(nn.Module):
    """Modulated 3×3 conv, per-pixel noise with a learned strength, bias and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, upsample=upsample)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.resolution = resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(x, w)
        if noise is None:
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
        x = x + noise * self.noise_strength
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    """1×1 modulated conv to RGB without demodulation."""

    def __init__(self, in_channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class Generator(nn.Module):
    """z → mapping → w → synthesis from a learned 4×4 constant, doubling to the output side, with
    RGB skip outputs summed across resolutions. Output: N×3×R×R in about [-1, 1]."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config  # travels with the registered model: sampling needs ψ and the size
        self.z_dim, self.resolution = config.z_dim, config.resolution
        ch = config.channels
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        self.layers = nn.ModuleList([StyledLayer(ch[4], ch[4], config.w_dim, 4)])
        self.to_rgbs = nn.ModuleList([ToRGB(ch[4], config.w_dim)])
        for side in config.resolutions[1:]:
            previous = ch[side // 2]
            self.layers.append(StyledLayer(previous, ch[side], config.w_dim, side, upsample=True))
            self.layers.append(StyledLayer(ch[side], ch[side], config.w_dim, side))
            self.to_rgbs.append(ToRGB(ch[side], config.w_dim))
        # The dataset's mean aligned face (set before training): the synthesis network learns
        # deviations from it, scaled by a learned gain that starts small, so early samples are
        # already face-shaped and training time goes into identity variation.
        self.register_buffer("mean_image", torch.zeros(3, config.resolution, config.resolution))
        self.residual_gain = nn.Parameter(torch.tensor(0.1 if config.mean_face_offset else 1.0))

    @property
    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """(1, side, side) of every noise input, in layer order."""
        return [(1, layer.resolution, layer.resolution) for layer in self.layers]

    def synthesis(self, w: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        noise = noise or [None] * len(self.layers)
        x = self.const.unsqueeze(0).expand(w.shape[0], -1, -1, -1)
        x = self.layers[0](x, w, noise[0])
        rgb = self.to_rgbs[0](x, w)
        for block in range(1, len(self.to_rgbs)):
            x = self.layers[2 * block - 1](x, w, noise[2 * block - 1])
            x = self.layers[2 * block](x, w, noise[2 * block])
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + self.to_rgbs[block](x, w)
        return self.mean_image + self.residual_gain * rgb

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noise: list[torch.Tensor] | None = None,
                update_w_avg: bool = False) -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation, update_w_avg), noise)


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.weight.shape[-1] // 2)
        return F.leaky_relu(out, 0.2) * LRELU_GAIN if self.activate else out


class DiscriminatorBlock(nn.Module):
    """Two 3×3 convs and a 2× average-pool, with a 1×1 residual path; the sum is scaled by 1/√2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(self.conv1(self.conv0(x)), 2)
        return (x + skip) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """Residual discriminator: RGB → blocks halving the side down to 4×4 → minibatch standard
    deviation → conv → linear → one logit per image."""

    def __init__(self, config: GanConfig, mbstd_group: int = 4):
        super().__init__()
        ch = config.channels
        sides = config.resolutions[::-1]  # R … 4
        self.from_rgb = EqualConv2d(3, ch[sides[0]], 1)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(ch[side], ch[side // 2]) for side in sides[:-1]])
        self.mbstd_group = mbstd_group
        self.conv = EqualConv2d(ch[4] + 1, ch[4], 3)
        self.fc = EqualLinear(ch[4] * 16, ch[4], activate=True)
        self.out = EqualLinear(ch[4], 1)

    def minibatch_std(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = min(self.mbstd_group, n)
        while n % group:
            group -= 1
        y = x.reshape(group, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N/group,)
        y = y.reshape(-1, 1, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.from_rgb(images))
        x = self.conv(self.minibatch_std(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
