"""DDIM sampling, SDEdit refinement and conditional super-resolution with a trained v-predicting UNet."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tasks.diffusion.schedule import q_sample

CONDITION_MODE = "bicubic"


@dataclass(frozen=True)
class SDEditTrace:
    """What an SDEdit call did: enough to record alongside its output."""

    strength: float
    """Share of the schedule the images were noised up to."""

    start_step: int | None
    """Schedule index the images were noised to (None when strength is 0 and nothing was done)."""

    steps: int
    """DDIM model evaluations on the way back to t = 0."""

    noise: torch.Tensor | None
    """The Gaussian noise added to the images (N×3×H×W), None when strength is 0."""


def ddim_timesteps(timesteps: int, steps: int, start_step: int | None = None) -> list[int]:
    """Descending schedule indices, evenly spaced from start_step (default T−1); the step after
    the last one lands on the clean image, so there are exactly `steps` model evaluations."""
    start = timesteps - 1 if start_step is None else start_step
    if not 0 <= start < timesteps:
        raise ValueError(f"start_step must be in [0, {timesteps - 1}], got {start}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    points = torch.linspace(float(start), 0.0, steps + 1)[:-1].round().long().tolist()
    return sorted(set(points), reverse=True)


def strength_to_step(strength: float, timesteps: int) -> int:
    """Schedule index reached by noising a share `strength` of the way (1 → T−1)."""
    return min(timesteps - 1, max(0, round(strength * timesteps) - 1))


def strength_steps(strength: float, steps: int) -> int:
    """DDIM evaluations for a partial schedule: the same share of the full-schedule steps, at least 1."""
    return max(1, math.ceil(strength * steps))


def upsample_condition(low_res: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic upsampling of the low-resolution image, clamped to [-1, 1]: the upscaler's condition."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if factor == 1:
        return low_res.clamp(-1.0, 1.0)
    upsampled = F.interpolate(low_res, scale_factor=float(factor), mode=CONDITION_MODE, align_corners=False)
    return upsampled.clamp(-1.0, 1.0)


def _gaussian(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    # Drawn on the generator's device so results do not depend on where the model runs.
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


@torch.no_grad()
def ddim_sample(
    model: nn.Module,
    shape: tuple[int, ...],
    alpha_bar: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    cond: torch.Tensor | None = None,
    eta: float = 0.0,
    x_start: torch.Tensor | None = None,
    start_step: int | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021) from x at start_step (default T−1) down to a clean image in [-1, 1].

    x_start is the sample at start_step (pure Gaussian noise is drawn when it is None); eta = 0 is
    deterministic, eta = 1 is DDPM-like ancestral sampling.
    """
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    timesteps = alpha_bar.shape[0]
    alpha_bar = alpha_bar.to(device=device, dtype=torch.float64)
    schedule = ddim_timesteps(timesteps, steps, start_step)
    reference = torch.empty(0, device=device, dtype=dtype)

    # 1. Start from the given sample or from pure noise.
    if x_start is not None:
        if tuple(x_start.shape) != tuple(shape):
            raise ValueError(f"x_start shape {tuple(x_start.shape)} differs from shape {tuple(shape)}")
        x = x_start.to(device=device, dtype=dtype)
    else:
        x = _gaussian(tuple(shape), generator, reference)
    if cond is not None:
        cond = cond.to(device=device, dtype=dtype)

    was_training = model.training
    model.eval()
    try:
        for index, t in enumerate(schedule):
            a_t = alpha_bar[t]
            a_prev = alpha_bar[schedule[index + 1]] if index + 1 < len(schedule) else alpha_bar.new_tensor(1.0)
            t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)

            # 2. Predict v and the clean image it implies; clip x0 to the data range and derive ε
            #    from it so the update stays consistent.
            v = model(x, t_batch, cond).to(torch.float64)
            x64 = x.to(torch.float64)
            x0 = (a_t.sqrt() * x64 - (1.0 - a_t).sqrt() * v).clamp(-1.0, 1.0)
            eps = (x64 - a_t.sqrt() * x0) / (1.0 - a_t).sqrt()

            # 3. DDIM step to the previous index: deterministic direction plus eta-scaled fresh noise.
            sigma = eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)).clamp(min=0.0).sqrt()
            direction = (1.0 - a_prev - sigma**2).clamp(min=0.0).sqrt() * eps
            x_prev = a_prev.sqrt() * x0 + direction
            if eta > 0.0 and index + 1 < len(schedule):
                x_prev = x_prev + sigma * _gaussian(tuple(shape), generator, reference).to(torch.float64)
            x = x_prev.to(dtype)
    finally:
        model.train(was_training)

    # 4. Clamp to the image range.
    return x.clamp(-1.0, 1.0)


@torch.no_grad()
def sdedit(
    model: nn.Module,
    images: torch.Tensor,
    alpha_bar: torch.Tensor,
    strength: float,
    steps: int,
    generator: torch.Generator,
    cond: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SDEditTrace]:
    """SDEdit (Meng et al. 2022): noise images to t = strength·T, then DDIM back to t = 0.

    `steps` counts DDIM steps over the full schedule; a share `strength` of them is used.
    Strength 0 returns the input unchanged.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if strength == 0.0:
        return images.clone(), SDEditTrace(strength=0.0, start_step=None, steps=0, noise=None)
    timesteps = alpha_bar.shape[0]

    # 1. Pick the start index and the number of DDIM steps for this share of the schedule.
    start = strength_to_step(strength, timesteps)
    count = strength_steps(strength, steps)

    # 2. Noise the images to the start index with generator noise.
    noise = _gaussian(tuple(images.shape), generator, images)
    t_batch = torch.full((images.shape[0],), start, device=images.device, dtype=torch.long)
    noised = q_sample(images, t_batch, noise, alpha_bar)

    # 3. Denoise deterministically back to a clean image.
    refined = ddim_sample(
        model, tuple(images.shape), alpha_bar, count, generator, cond=cond, x_start=noised, start_step=start
    )
    return refined.to(images.device), SDEditTrace(strength=strength, start_step=start, steps=count, noise=noise)


@torch.no_grad()
def super_resolve(
    upscaler: nn.Module,
    low_res: torch.Tensor,
    alpha_bar: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    factor: int = 2,
    strength: float = 1.0,
    residual_scale: float = 4.0,
) -> torch.Tensor:
    """An image factor× larger: the bicubic upsampling of low_res plus the detail the upscaler
    samples. The upscaler diffuses the residual (high-res − upsampled) × residual_scale, so an
    untrained or weak model starts from bicubic quality instead of from noise.

    strength 1 samples the residual from pure noise; below 1 it starts from a zero residual
    noised to strength·T (SDEdit-style) and uses that share of `steps`.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if low_res.ndim != 4:
        raise ValueError(f"low_res must be N×C×H×W, got shape {tuple(low_res.shape)}")
    timesteps = alpha_bar.shape[0]

    # 1. The condition: the low-resolution image upsampled the way the upscaler was trained.
    cond = upsample_condition(low_res, factor)
    shape = tuple(cond.shape)

    # 2. The residual: from pure noise at full strength, else from zero noised to strength·T.
    if strength >= 1.0:
        residual = ddim_sample(upscaler, shape, alpha_bar, steps, generator, cond=cond)
    else:
        start = strength_to_step(strength, timesteps)
        noise = _gaussian(shape, generator, cond)
        t_batch = torch.full((shape[0],), start, device=cond.device, dtype=torch.long)
        noised = q_sample(torch.zeros_like(cond), t_batch, noise, alpha_bar)
        residual = ddim_sample(upscaler, shape, alpha_bar, strength_steps(strength, steps), generator,
                               cond=cond, x_start=noised, start_step=start)

    # 3. Upsampled image plus detail.
    return (cond + residual.to(cond.device) / residual_scale).clamp(-1.0, 1.0).to(low_res.device)
