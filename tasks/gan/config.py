"""Settings of the GAN: network sizes, training schedule and sampling."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class GanConfig:
    """A StyleGAN2-style generator and residual discriminator, and how they are trained."""

    resolution: int = 32
    """Side of the generated face crops in pixels (a power of two, at least 8)."""

    z_dim: int = 128
    """Size of the input latent z."""

    w_dim: int = 128
    """Size of the intermediate latent w that modulates every convolution."""

    mapping_layers: int = 4
    """Fully connected layers of the mapping network z → w."""

    channels: dict[int, int] = field(default_factory=lambda: {4: 128, 8: 64, 16: 32, 32: 16})
    """Feature channels per resolution (generator and discriminator share them)."""

    mean_face_offset: bool = True
    """The generator adds the training set's mean face to its output and learns the deviation,
    with a gain that starts at 0.1 (image-space data centring; False: plain StyleGAN2 output)."""

    batch_size: int = 32
    """Images per training step."""

    learning_rate: float = 0.0025
    """Adam learning rate of both networks (betas 0 and 0.99, as in StyleGAN2)."""

    r1_gamma: float = 0.1
    """Weight of the R1 penalty on real images."""

    r1_interval: int = 16
    """R1 is applied every this many steps (lazy regularisation), scaled to match."""

    ema_half_life_images: int = 5000
    """Half-life of the EMA generator's weights, in training images."""

    ema_rampup: float = 0.05
    """The EMA half-life is capped at this fraction of the images seen so far, so early
    samples follow the fast-moving generator."""

    augment: tuple[str, ...] = ("color", "translation", "cutout")
    """DiffAugment policies applied to the images the discriminator sees."""

    augment_target: float = 0.6
    """Adaptive augmentation: the probability p rises while E[sign D(real)] is above this."""

    augment_speed_images: int = 20000
    """Training images over which p may move from 0 to 1."""

    steps: int = 3000
    """Training steps (each one discriminator and one generator update)."""

    max_seconds: float = 540.0
    """Wall-clock cap on training; it stops at whichever of steps and this comes first."""

    epoch_images: int = 8000
    """Images per epoch: losses and metrics are logged and a checkpoint written per epoch."""

    truncation: float = 0.7
    """Truncation ψ at sampling time: w = w_avg + ψ (w − w_avg); 1 is none."""

    eval_samples: int = 64
    """Samples scored with MediaPipe at each epoch and at registration."""

    seed: int = 0
    """Seed of the weight initialisation, batch order, latents and noise."""

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 8, got {self.resolution}")
        missing = [r for r in self.resolutions if r not in self.channels]
        if missing:
            raise ValueError(f"channels has no entry for resolutions {missing}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (the discriminator uses minibatch statistics)")
        if not 0.0 < self.truncation <= 1.0:
            raise ValueError(f"truncation must lie in (0, 1], got {self.truncation}")
        if self.steps < 1 or self.max_seconds <= 0:
            raise ValueError("steps and max_seconds must be positive")
        unknown = set(self.augment) - {"color", "translation", "cutout"}
        if unknown:
            raise ValueError(f"unknown augment policies {sorted(unknown)}; use color, translation, cutout")

    @property
    def resolutions(self) -> list[int]:
        """Feature sides from 4 up to the output resolution."""
        sides, side = [], 4
        while side <= self.resolution:
            sides.append(side)
            side *= 2
        return sides

    def with_overrides(self, **changes) -> "GanConfig":
        return replace(self, **changes)


GAN_CONFIGS: dict[str, GanConfig] = {
    # Minutes on 2 CPU cores (about 80 images/s): a 32² generator for tests, demos and CPU-only
    # installs; the diffusion upscaler takes its samples to 64².
    "small": GanConfig(),
    # GPU sizes: wider networks, longer schedules.
    "base": GanConfig(resolution=64, z_dim=256, w_dim=256, mapping_layers=8,
                      channels={4: 256, 8: 256, 16: 256, 32: 128, 64: 64}, batch_size=64,
                      steps=40000, max_seconds=4 * 3600, epoch_images=50000, ema_half_life_images=10000),
    "large": GanConfig(resolution=128, z_dim=512, w_dim=512, mapping_layers=8,
                       channels={4: 512, 8: 512, 16: 256, 32: 256, 64: 128, 128: 64}, batch_size=64,
                       steps=150000, max_seconds=24 * 3600, epoch_images=100000, ema_half_life_images=10000),
}
