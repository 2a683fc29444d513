"""One GAN training step and the loop around it: non-saturating logistic loss, lazy R1 on real
images, DiffAugment before the discriminator, and an EMA copy of the generator for sampling."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tasks.common.torch_utils import ema_update
from tasks.gan.augment import adjust_probability, diff_augment
from tasks.gan.config import GanConfig
from tasks.gan.networks import Discriminator, Generator


@dataclass
class StepLosses:
    """Losses of one training step."""

    d_loss: float
    g_loss: float
    r1: float | None
    augment_p: float


class GanTrainer:
    """Generator, discriminator, EMA generator and their optimisers, with checkpointable state."""

    def __init__(self, config: GanConfig, device: torch.device):
        self.config, self.device = config, device
        torch.manual_seed(config.seed)
        self.generator = Generator(config).to(device)
        self.discriminator = Discriminator(config).to(device)
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        betas = (0.0, 0.99)
        # Lazy R1 changes the effective step size of the discriminator's Adam (StyleGAN2 §B).
        r1_ratio = config.r1_interval / (config.r1_interval + 1)
        self.g_optimiser = torch.optim.Adam(self.generator.parameters(), lr=config.learning_rate, betas=betas)
        self.d_optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=config.learning_rate * r1_ratio,
                                            betas=(betas[0] ** r1_ratio, betas[1] ** r1_ratio))
        self.random = torch.Generator(device="cpu").manual_seed(config.seed + 1)
        self.step_count = 0
        self.images_seen = 0
        self.augment_p = 0.0
        self._real_signs: list[float] = []

    def _latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.config.z_dim, generator=self.random).to(self.device)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        if not self.config.augment:
            return images
        return diff_augment(images, self.config.augment, self.random, self.augment_p)

    def step(self, real: torch.Tensor) -> StepLosses:
        """One discriminator update (with R1 every r1_interval steps) and one generator update on
        a batch of real images (N×3×R×R in [-1, 1])."""
        config, n = self.config, real.shape[0]
        real = real.to(self.device)

        # 1. Discriminator: softplus(D(G(z))) + softplus(−D(x)).
        self.generator.requires_grad_(False)
        self.discriminator.requires_grad_(True)
        with torch.no_grad():
            fake = self.generator(self._latents(n), update_w_avg=True)
        real_scores = self.discriminator(self._augment(real))
        d_loss = F.softplus(self.discriminator(self._augment(fake))).mean() + F.softplus(-real_scores).mean()
        self._real_signs.append(float(real_scores.detach().sign().mean()))
        self.d_optimiser.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimiser.step()

        # 2. Lazy R1: γ/2 ‖∇_x D(x)‖² on real images, every r1_interval steps, scaled by it.
        r1_value = None
        if self.step_count % config.r1_interval == 0:
            real_r1 = real.detach().requires_grad_(True)
            scores = self.discriminator(self._augment(real_r1))
            (gradient,) = torch.autograd.grad(scores.sum(), real_r1, create_graph=True)
            penalty = gradient.square().sum(dim=(1, 2, 3)).mean()
            self.d_optimiser.zero_grad(set_to_none=True)
            (penalty * (config.r1_gamma / 2) * config.r1_interval).backward()
            self.d_optimiser.step()
            r1_value = float(penalty.detach())

        # 3. Generator: non-saturating softplus(−D(G(z))).
        self.generator.requires_grad_(True)
        self.discriminator.requires_grad_(False)
        g_loss = F.softplus(-self.discriminator(self._augment(self.generator(self._latents(n))))).mean()
        self.g_optimiser.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimiser.step()

        # 4. Adaptive augmentation, every 4 steps from the recent real-image scores.
        self.step_count += 1
        self.images_seen += n
        if config.augment and self.step_count % 4 == 0:
            sign_mean = sum(self._real_signs) / len(self._real_signs)
            self.augment_p = adjust_probability(self.augment_p, sign_mean, config.augment_target,
                                                n * len(self._real_signs), config.augment_speed_images)
            self._real_signs.clear()

        # 5. EMA generator, with a half-life that ramps up with the images seen.
        half_life = min(config.ema_half_life_images, config.ema_rampup * self.images_seen)
        ema_update(self.generator_ema, self.generator, 0.5 ** (n / max(half_life, 1e-8)))
        return StepLosses(float(d_loss.detach()), float(g_loss.detach()), r1_value, self.augment_p)

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                "generator_ema": self.generator_ema.state_dict(), "g_optimiser": self.g_optimiser.state_dict(),
                "d_optimiser": self.d_optimiser.state_dict(), "random": self.random.get_state(),
                "step_count": self.step_count, "images_seen": self.images_seen, "augment_p": self.augment_p}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.g_optimiser.load_state_dict(state["g_optimiser"])
        self.d_optimiser.load_state_dict(state["d_optimiser"])
        self.random.set_state(state["random"])
        self.step_count, self.images_seen = int(state["step_count"]), int(state["images_seen"])
        self.augment_p = float(state["augment_p"])


def set_mean_face(trainer: GanTrainer, images_u8: np.ndarray) -> None:
    """Store the training images' mean in both generators (used when config.mean_face_offset)."""
    if not trainer.config.mean_face_offset:
        return
    mean = torch.from_numpy(images_u8.mean(axis=0, dtype=np.float64).astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    for generator in (trainer.generator, trainer.generator_ema):
        generator.mean_image.copy_(mean.to(generator.mean_image.device))


class BalancedBatches:
    """Batches drawn with replacement by per-image weights (equal total weight per label), from a
    seeded numpy generator whose state is checkpointed with the trainer."""

    def __init__(self, images: np.ndarray, weights: np.ndarray, batch_size: int, seed: int, flip: bool = True):
        self.images, self.batch_size, self.flip = images, batch_size, flip
        self.weights = np.asarray(weights, np.float64) / np.sum(weights)
        self.random = np.random.default_rng(seed)

    def next(self) -> torch.Tensor:
        index = self.random.choice(len(self.images), size=self.batch_size, p=self.weights)
        batch = self.images[index]
        if self.flip:  # faces are near-symmetric: mirroring doubles the data for free
            mirror = self.random.random(self.batch_size) < 0.5
            batch = np.where(mirror[:, None, None, None], batch[:, :, ::-1], batch)
        return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@dataclass
class EpochReport:
    """What the loop reports after each epoch."""

    epoch: int
    step: int
    images_seen: int
    seconds: float
    d_loss: float
    g_loss: float
    r1: float
    augment_p: float


def train_gan(trainer: GanTrainer, batches: BalancedBatches,
              on_epoch: Callable[[EpochReport], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> list[EpochReport]:
    """Run steps until config.steps or config.max_seconds; call on_epoch at every epoch boundary
    and at the end (the caller checkpoints and logs there). Resumes from trainer.step_count."""
    config = trainer.config
    started = time.perf_counter()
    reports: list[EpochReport] = []
    sums = {"d": 0.0, "g": 0.0, "r1": 0.0, "n": 0, "n_r1": 0}
    steps_per_epoch = max(1, config.epoch_images // config.batch_size)

    def close_epoch() -> None:
        report = EpochReport(epoch=trainer.step_count // steps_per_epoch, step=trainer.step_count,
                             images_seen=trainer.images_seen, seconds=time.perf_counter() - started,
                             d_loss=sums["d"] / max(sums["n"], 1), g_loss=sums["g"] / max(sums["n"], 1),
                             r1=sums["r1"] / max(sums["n_r1"], 1), augment_p=trainer.augment_p)
        reports.append(report)
        sums.update(d=0.0, g=0.0, r1=0.0, n=0, n_r1=0)
        if on_epoch is not None:
            on_epoch(report)

    while trainer.step_count < config.steps:
        if time.perf_counter() - started > config.max_seconds or (should_stop is not None and should_stop()):
            break
        losses = trainer.step(batches.next())
        sums["d"] += losses.d_loss
        sums["g"] += losses.g_loss
        sums["n"] += 1
        if losses.r1 is not None:
            sums["r1"] += losses.r1
            sums["n_r1"] += 1
        if trainer.step_count % steps_per_epoch == 0:
            close_epoch()
    if sums["n"]:
        close_epoch()
    return reports
