"""Settings of the diffusion stage: UNet sizes, noise schedule, training budget and sampling."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class DiffusionConfig:
    """A denoiser at `resolution` and a conditional upscaler at `resolution · upscale`, trained alike."""

    resolution: int = 64
    """Side in pixels of the denoiser's square images (SDEdit refinement works at this size)."""

    upscale: int = 2
    """Super-resolution factor: the upscaler turns resolution² images into (resolution·upscale)² ones."""

    base_channels: int = 24
    """Channels of the denoiser's first level; level i has base_channels · channel_mults[i]."""

    upscaler_base_channels: int = 24
    """Channels of the upscaler's first level (it runs at upscale² times the pixels of the denoiser)."""

    patch_size: int = 2
    """Pixels per side folded into channels before the denoiser's first level (1 = none); the UNet
    then runs at resolution/patch_size, patch_size² times cheaper."""

    upscaler_patch_size: int = 2
    """The same for the upscaler, which runs at (resolution·upscale)/upscaler_patch_size."""

    upscaler_crop: int = 64
    """Side of the random crops the upscaler trains on (resolution·upscale or 0 = whole images);
    super-resolution is local, so crops cut its training cost by the area ratio. Sampling always
    uses whole images."""

    channel_mults: tuple[int, ...] = (1, 2, 2)
    """Channel multiplier per UNet level; each level after the first halves the side."""

    attention_resolutions: tuple[int, ...] = (16, 8)
    """Feature-map sides that get a self-attention block (the low ones: attention is quadratic in pixels)."""

    attention_heads: int = 1
    """Heads of each self-attention block; must divide the channels of every level that has attention."""

    res_blocks: int = 1
    """Residual blocks per UNet level in the encoder (the decoder has one more)."""

    dropout: float = 0.0
    """Dropout inside residual blocks during training."""

    timesteps: int = 1000
    """Length T of the diffusion (cosine) noise schedule."""

    batch_size: int = 8
    """Images per training step."""

    micro_batch_size: int = 0
    """Images per forward/backward pass inside a step on a CPU (0 = the whole batch; a GPU always
    takes whole batches): gradients of the parts are summed, so the step is the same (dropout's
    draws aside) and peak memory falls with the part size."""

    learning_rate: float = 3e-3
    """AdamW learning rate after warm-up."""

    warmup_steps: int = 20
    """Steps over which the learning rate rises linearly from 0 to learning_rate."""

    ema_decay: float = 0.995
    """Decay of the exponential moving average of the weights that is used for sampling."""

    steps: int = 2000
    """Training length: steps for each network (denoiser and upscaler)."""

    max_seconds: float = 150.0
    """Wall-clock cap on training each network. A run it stops before `steps` is recorded
    (stopped_by=time) and is not promoted; rerunning the same config resumes it."""

    ddim_steps: int = 25
    """DDIM steps over the full schedule; SDEdit and partial-strength super-resolution use that share of them."""

    sdedit_strength: float = 0.3
    """Default share of the schedule SDEdit noises an image up to before denoising it (0 keeps the image)."""

    sr_strength: float = 0.5
    """Share of the schedule super-resolution starts from: 1 samples the detail residual from pure
    noise, below 1 starts from a zero residual (the bicubic image) noised that far."""

    residual_scale: float = 4.0
    """The upscaler diffuses (high-res − bicubic upsampled) × this, so the small residual spans
    about the same range as an image."""

    seed: int = 0
    """Seed of weight initialisation, batch order, timesteps and noise during training."""

    gate_psnr_margin_db: float = 0.0
    """Promotion gate: the upscaler's held-out super-resolution PSNR must beat bicubic's by more
    than this many dB."""

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be a non-empty tuple of positive ints, got {self.channel_mults}")
        if self.upscale < 1:
            raise ValueError(f"upscale must be >= 1, got {self.upscale}")
        if self.patch_size < 1 or self.upscaler_patch_size < 1:
            raise ValueError("patch_size and upscaler_patch_size must be >= 1")
        halvings = 2 ** (len(self.channel_mults) - 1)
        low_multiple = self.patch_size * halvings
        if self.resolution % low_multiple:
            raise ValueError(
                f"resolution {self.resolution} must be divisible by patch_size·2^(levels−1) = {low_multiple}"
            )
        high = self.resolution * self.upscale
        multiple = self.upscaler_patch_size * halvings
        if high % multiple:
            raise ValueError(
                f"resolution·upscale {high} must be divisible by upscaler_patch_size·2^(levels−1) = {multiple}"
            )
        if self.upscaler_crop and (self.upscaler_crop % multiple or not multiple <= self.upscaler_crop <= high):
            raise ValueError(
                f"upscaler_crop must be 0 or a multiple of {multiple} up to {high}, got {self.upscaler_crop}"
            )
        if self.base_channels < 4 or self.upscaler_base_channels < 4:
            raise ValueError("base_channels and upscaler_base_channels must be >= 4")
        if any(r < 1 for r in self.attention_resolutions):
            raise ValueError(f"attention_resolutions must be positive, got {self.attention_resolutions}")
        if self.attention_heads < 1:
            raise ValueError(f"attention_heads must be >= 1, got {self.attention_heads}")
        for base in (self.base_channels, self.upscaler_base_channels):
            for mult in self.channel_mults:
                if (base * mult) % self.attention_heads:
                    raise ValueError(
                        f"attention_heads {self.attention_heads} must divide every level's channels ({base * mult})"
                    )
        if self.res_blocks < 1:
            raise ValueError(f"res_blocks must be >= 1, got {self.res_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be >= 2, got {self.timesteps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.micro_batch_size < 0:
            raise ValueError(f"micro_batch_size must be >= 0, got {self.micro_batch_size}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if not 1 <= self.ddim_steps <= self.timesteps:
            raise ValueError(f"ddim_steps must be in [1, timesteps={self.timesteps}], got {self.ddim_steps}")
        if not 0.0 <= self.sdedit_strength <= 1.0:
            raise ValueError(f"sdedit_strength must be in [0, 1], got {self.sdedit_strength}")
        if not 0.0 < self.sr_strength <= 1.0:
            raise ValueError(f"sr_strength must be in (0, 1], got {self.sr_strength}")

    def with_overrides(self, **overrides: object) -> DiffusionConfig:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **overrides)


DIFFUSION_CONFIGS: dict[str, DiffusionConfig] = {
    # About five minutes for both networks together on a quiet 2-core box (1,200 steps each); the
    # cap of 10 minutes a network only cuts runs short on a busy one, and so blocks their promotion.
    # Small batches at a high learning rate learn the most per CPU second; weak models refine
    # better than they sample, hence the partial-strength super-resolution.
    "small": DiffusionConfig(resolution=32, patch_size=1, upscaler_patch_size=2, upscaler_crop=64,
                             sdedit_strength=0.1, sr_strength=0.25, steps=1200, max_seconds=600.0),
    # One GPU, tens of minutes.
    "base": DiffusionConfig(
        base_channels=64,
        upscaler_base_channels=64,
        patch_size=1,
        upscaler_patch_size=1,
        upscaler_crop=128,
        channel_mults=(1, 2, 2, 4),
        attention_resolutions=(16, 8),
        attention_heads=4,
        res_blocks=2,
        dropout=0.1,
        batch_size=64,
        micro_batch_size=8,
        learning_rate=2e-4,
        warmup_steps=500,
        ema_decay=0.999,
        steps=40_000,
        max_seconds=3600.0,
        ddim_steps=50,
        sr_strength=1.0,
    ),
    # A large GPU, hours.
    "large": DiffusionConfig(
        resolution=128,
        base_channels=128,
        upscaler_base_channels=96,
        patch_size=1,
        upscaler_patch_size=2,
        upscaler_crop=256,
        channel_mults=(1, 1, 2, 3, 4),
        attention_resolutions=(32, 16, 8),
        attention_heads=4,
        res_blocks=2,
        dropout=0.1,
        batch_size=64,
        learning_rate=1e-4,
        warmup_steps=1000,
        ema_decay=0.9999,
        steps=200_000,
        max_seconds=6 * 3600.0,
        ddim_steps=100,
        sr_strength=1.0,
    ),
}
