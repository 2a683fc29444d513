"""Drawing faces from a trained generator: seeded latents, truncation, seeded noise."""

from __future__ import annotations

import numpy as np
import torch

from tasks.gan.networks import Generator


def latent_for_seed(seed: int, z_dim: int) -> np.ndarray:
    """The z (float32, z_dim) that a seed stands for; the same on every machine."""
    return np.random.default_rng(seed).standard_normal(z_dim).astype(np.float32)


@torch.no_grad()
def generate_faces(generator: Generator, latents: np.ndarray, truncation: float, noise_seed: int,
                   batch_size: int = 32) -> torch.Tensor:
    """Images (N×3×R×R in [-1, 1], on the CPU) for latents (N×z_dim), with per-layer noise drawn
    from noise_seed so a latent and seed always give the same face."""
    device = next(generator.parameters()).device
    random = torch.Generator(device="cpu").manual_seed(noise_seed)
    outputs = []
    for start in range(0, len(latents), batch_size):
        z = torch.from_numpy(np.asarray(latents[start:start + batch_size], np.float32)).to(device)
        noise = [torch.randn((z.shape[0],) + shape, generator=random).to(device) for shape in generator.noise_shapes]
        outputs.append(generator(z, truncation=truncation, noise=noise).clamp(-1, 1).cpu())
    return torch.cat(outputs)
