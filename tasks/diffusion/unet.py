"""The UNet (DDPM/ADM style) used as denoiser and as conditional upscaler; it predicts v."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from tasks.diffusion.config import DiffusionConfig

IMAGE_CHANNELS = 3


def group_count(channels: int) -> int:
    """GroupNorm groups: at least 4 channels per group, at most 32 groups."""
    for groups in (32, 16, 8, 4, 2, 1):
        if channels % groups == 0 and channels // groups >= 4:
            return groups
    return 1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (N, dim) of integer timesteps, as in the Transformer positional code."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class ResBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm/SiLU; the timestep sets a scale and shift on the second norm."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(group_count(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.embed(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} attention heads")
        self.heads = heads
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # each (N, heads, HW, C/heads)
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(attended.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Strided 3×3 convolution halving the side."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling followed by a 3×3 convolution (no checkerboard artefacts)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Predicts v (√ᾱ·ε − √(1−ᾱ)·x0) for x_t at timestep t, optionally conditioned on an image of the same size.

    The condition (an upsampled low-resolution image for super-resolution) is concatenated to x_t
    along channels, so a conditional net has in_channels = out_channels + condition channels.
    `resolution` places the attention blocks (at feature sides resolution/patch_size/2^level in
    attention_resolutions); the net is convolutional, so inputs of other sides (training crops)
    work when the sides are multiples of patch_size·2^(levels−1).
    """

    def __init__(
        self,
        in_channels: int = IMAGE_CHANNELS,
        out_channels: int = IMAGE_CHANNELS,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        attention_resolutions: tuple[int, ...] = (16,),
        res_blocks: int = 1,
        resolution: int = 64,
        attention_heads: int = 1,
        dropout: float = 0.0,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < out_channels:
            raise ValueError(f"in_channels ({in_channels}) must be >= out_channels ({out_channels})")
        if not channel_mults or res_blocks < 1 or base_channels < 1:
            raise ValueError("UNet needs channel_mults, res_blocks >= 1 and base_channels >= 1")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        levels = len(channel_mults)
        self.side_multiple = patch_size * 2 ** (levels - 1)
        if resolution % self.side_multiple:
            raise ValueError(
                f"resolution {resolution} is not divisible by patch_size·2^(levels−1) = {self.side_multiple}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.cond_channels = in_channels - out_channels
        self.resolution = resolution
        self.patch_size = patch_size
        self.base_channels = base_channels
        embed_dim = 4 * base_channels
        attention_sides = set(attention_resolutions)

        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )
        # Patches of patch_size² pixels become channels: the net runs patch_size² times cheaper.
        self.conv_in = nn.Conv2d(in_channels * patch_size**2, base_channels, 3, padding=1)

        # Encoder: every block's output is kept as a skip for the decoder.
        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        channels, side = base_channels, resolution // patch_size
        for level, mult in enumerate(channel_mults):
            for _ in range(res_blocks):
                block = nn.ModuleList([ResBlock(channels, base_channels * mult, embed_dim, dropout)])
                channels = base_channels * mult
                if side in attention_sides:
                    block.append(AttentionBlock(channels, attention_heads))
                self.down.append(block)
                skip_channels.append(channels)
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(channels)]))
                skip_channels.append(channels)
                side //= 2

        # Middle: attention only where the bottom side is an attention resolution (keeps 128² upscalers cheap).
        self.mid_block1 = ResBlock(channels, channels, embed_dim, dropout)
        self.mid_attention = AttentionBlock(channels, attention_heads) if side in attention_sides else nn.Identity()
        self.mid_block2 = ResBlock(channels, channels, embed_dim, dropout)

        # Decoder: one more block per level than the encoder, each eating one skip.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for index in range(res_blocks + 1):
                block = nn.ModuleList(
                    [ResBlock(channels + skip_channels.pop(), base_channels * mult, embed_dim, dropout)]
                )
                channels = base_channels * mult
                if side in attention_sides:
                    block.append(AttentionBlock(channels, attention_heads))
                if level > 0 and index == res_blocks:
                    block.append(Upsample(channels))
                    side *= 2
                self.up.append(block)

        self.norm_out = nn.GroupNorm(group_count(channels), channels)
        self.conv_out = nn.Conv2d(channels, out_channels * patch_size**2, 3, padding=1)
        # Zero output: the untrained net predicts v = 0, a stable start for the v-MSE loss.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def conditional(self) -> bool:
        return self.cond_channels > 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        n, _, height, width = x.shape
        if height % self.side_multiple or width % self.side_multiple:
            raise ValueError(f"image sides must be multiples of {self.side_multiple}, got {height}×{width}")
        if t.ndim != 1 or t.shape[0] != n:
            raise ValueError(f"t must be a LongTensor of shape ({n},), got {tuple(t.shape)}")
        if self.conditional:
            if cond is None:
                raise ValueError("this UNet is conditional: pass cond (the upsampled low-resolution image)")
            if cond.shape != (n, self.cond_channels, height, width):
                raise ValueError(
                    f"cond must have shape {(n, self.cond_channels, height, width)}, got {tuple(cond.shape)}"
                )
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("this UNet is unconditional but a cond tensor was passed")

        embedding = self.time_mlp(timestep_embedding(t, self.base_channels))
        h = self.conv_in(F.pixel_unshuffle(x, self.patch_size) if self.patch_size > 1 else x)
        skips = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, embedding) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, embedding)), embedding)
        for block in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in block:
                h = layer(h, embedding) if isinstance(layer, ResBlock) else layer(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out


def build_denoiser(config: DiffusionConfig) -> UNet:
    """Unconditional v-predictor at config.resolution (SDEdit refinement and sampling)."""
    return UNet(
        in_channels=IMAGE_CHANNELS,
        out_channels=IMAGE_CHANNELS,
        base_channels=config.base_channels,
        channel_mults=config.channel_mults,
        attention_resolutions=config.attention_resolutions,
        res_blocks=config.res_blocks,
        patch_size=config.patch_size,
        resolution=config.resolution,
        attention_heads=config.attention_heads,
        dropout=config.dropout,
    )


def build_upscaler(config: DiffusionConfig) -> UNet:
    """v-predictor at resolution·upscale conditioned on the upsampled low-resolution image."""
    return UNet(
        in_channels=2 * IMAGE_CHANNELS,
        out_channels=IMAGE_CHANNELS,
        base_channels=config.upscaler_base_channels,
        channel_mults=config.channel_mults,
        attention_resolutions=config.attention_resolutions,
        res_blocks=config.res_blocks,
        patch_size=config.upscaler_patch_size,
        resolution=config.resolution * config.upscale,
        attention_heads=config.attention_heads,
        dropout=config.dropout,
    )
