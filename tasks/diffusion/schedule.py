"""Noise schedule of the diffusion stage: cosine ᾱ(t) and the forward (noising) process."""

from __future__ import annotations

import math

import torch


def cosine_alpha_bar(timesteps: int, offset: float = 0.008) -> torch.Tensor:
    """ᾱ_t for t = 0 … T−1 from the cosine schedule of Nichol & Dhariwal (2021), float32 (T,).

    Each β_t = 1 − ᾱ_{t+1}/ᾱ_t is clipped to 0.999, so the last steps stay invertible.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    grid = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((grid + offset) / (1.0 + offset) * (math.pi / 2.0)) ** 2
    betas = (1.0 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def gather(alpha_bar: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ᾱ at indices t, shaped (N, 1, 1, 1) on like's device and dtype for broadcasting."""
    values = alpha_bar.to(like.device)[t.to(like.device)]
    return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · noise, with t a LongTensor (N,) of step indices."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
    if t.ndim != 1 or t.shape[0] != x0.shape[0]:
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    a = gather(alpha_bar, t, x0)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def predict_x0(x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Invert q_sample for x0 given the predicted noise."""
    a = gather(alpha_bar, t, x_t)
    return (x_t - (1.0 - a).sqrt() * eps) / a.sqrt()


def velocity(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The v target (Salimans & Ho 2022), v = √ᾱ·ε − √(1−ᾱ)·x0, which the UNets predict: unlike ε it
    stays well scaled at low noise, so a briefly trained model refines smoothly instead of adding
    noise back."""
    a = gather(alpha_bar, t, x0)
    return a.sqrt() * noise - (1.0 - a).sqrt() * x0
