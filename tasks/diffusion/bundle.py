"""The registered diffusion model: denoiser + upscaler + schedule, with the three operations the
production flow uses (SDEdit refinement, 2× super-resolution, refinement at the upscaled size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tasks.diffusion.config import DiffusionConfig
from tasks.diffusion.sampling import SDEditTrace, sdedit, super_resolve, upsample_condition
from tasks.diffusion.schedule import cosine_alpha_bar


class DiffusionBundle(nn.Module):
    """Both trained networks (their EMA weights) and the noise schedule they were trained with."""

    def __init__(self, denoiser: nn.Module, upscaler: nn.Module, config: DiffusionConfig):
        super().__init__()
        self.denoiser, self.upscaler, self.config = denoiser, upscaler, config
        self.register_buffer("alpha_bar", cosine_alpha_bar(config.timesteps))

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def high_resolution(self) -> int:
        return self.config.resolution * self.config.upscale

    @torch.no_grad()
    def refine(self, images: torch.Tensor, strength: float, generator: torch.Generator) -> tuple[torch.Tensor, SDEditTrace]:
        """SDEdit at the denoiser's resolution (N×3×R×R in [-1, 1])."""
        return sdedit(self.denoiser, images, self.alpha_bar, strength, self.config.ddim_steps, generator)

    @torch.no_grad()
    def upscale(self, images: torch.Tensor, generator: torch.Generator, strength: float | None = None) -> torch.Tensor:
        """R → upscale·R, conditioned on the bicubic upsampling of the input; `strength` (default:
        the config's sr_strength) is the share of the schedule the detail is sampled over."""
        return super_resolve(self.upscaler, images, self.alpha_bar, self.config.ddim_steps, generator,
                             factor=self.config.upscale, strength=strength or self.config.sr_strength,
                             residual_scale=self.config.residual_scale)

    @torch.no_grad()
    def refine_high(self, images: torch.Tensor, strength: float,
                    generator: torch.Generator) -> tuple[torch.Tensor, SDEditTrace]:
        """SDEdit of the image's detail at the upscaler's resolution: the residual over its own
        low-res version is noised and redrawn, so the layout and colours stay."""
        scale = self.config.residual_scale
        low = F.interpolate(images, scale_factor=1 / self.config.upscale, mode="area")
        cond = upsample_condition(low, self.config.upscale)
        residual, trace = sdedit(self.upscaler, (images - cond) * scale, self.alpha_bar, strength,
                                 self.config.ddim_steps, generator, cond=cond)
        return (cond + residual / scale).clamp(-1.0, 1.0), trace
