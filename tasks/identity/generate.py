"""Drawing a new identity: GAN sample → SDEdit refinement → 2× super-resolution → portrait, with
further latents drawn from seeds derived from the row's seed while no face is found."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from tasks.common.torch_utils import to_uint8_images
from tasks.diffusion.bundle import DiffusionBundle
from tasks.gan.networks import Generator
from tasks.gan.sampling import generate_faces, latent_for_seed


def draw_seed(seed: int, draw: int) -> int:
    """The latent seed of a row's n-th draw: the row's own seed first, then hashes of (seed, n)."""
    if draw == 0:
        return seed
    digest = hashlib.sha256(f"avatarflow-draw:{seed}:{draw}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class Draw:
    """One attempt of a generate row."""

    draw: int
    latent_seed: int
    face_found: bool


@dataclass
class GeneratedIdentity:
    """The accepted face and what produced it."""

    portrait: np.ndarray
    """portrait_side² × 3 uint8 image handed to reconstruction."""
    gan_sample: np.ndarray
    """R×R×3 uint8 raw GAN output of the accepted draw."""
    latent: np.ndarray
    """z of the accepted draw (z_dim,) float32."""
    diffusion_noise: np.ndarray
    """SDEdit noise of the accepted draw (3×R×R float32)."""
    draws: list[Draw] = field(default_factory=list)


def generate_identity(seed: int, generator: Generator, diffusion: DiffusionBundle, truncation: float,
                      strength: float, max_draws: int, portrait_side: int,
                      has_face: Callable[[np.ndarray], bool],
                      upscale_strength: float | None = None) -> GeneratedIdentity | list[Draw]:
    """The first draw whose portrait `has_face`, or the list of failed draws."""
    if generator.resolution != diffusion.resolution:
        raise ValueError(f"the GAN draws {generator.resolution}² faces but the diffusion model refines "
                         f"{diffusion.resolution}²; train both with one config")
    draws: list[Draw] = []
    device = next(diffusion.parameters()).device
    for draw in range(max_draws):
        latent_seed = draw_seed(seed, draw)
        # 1. GAN sample from the latent (noise inputs seeded by the same seed).
        z = latent_for_seed(latent_seed, generator.z_dim)[None]
        sample = generate_faces(generator, z, truncation, noise_seed=latent_seed).to(device)
        # 2. SDEdit: noise to `strength` and denoise, with the trajectory seeded per draw.
        trajectory = torch.Generator(device="cpu").manual_seed(latent_seed)
        refined, trace = diffusion.refine(sample, strength, trajectory)
        # 3. 2× super-resolution, then a smooth resize to the portrait side.
        high = diffusion.upscale(refined, trajectory, upscale_strength)
        face = to_uint8_images(high)[0]
        portrait = np.asarray(Image.fromarray(face).resize((portrait_side, portrait_side), Image.BICUBIC))
        found = bool(has_face(portrait))
        draws.append(Draw(draw=draw, latent_seed=latent_seed, face_found=found))
        if found:
            noise = trace.noise[0].cpu().numpy() if trace.noise is not None else np.zeros(sample.shape[1:], np.float32)
            return GeneratedIdentity(portrait=portrait, gan_sample=to_uint8_images(sample)[0], latent=z[0],
                                     diffusion_noise=noise.astype(np.float32), draws=draws)
    return draws
