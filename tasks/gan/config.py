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
    """Training length: steps, each one discriminator and one generator update."""

    max_seconds: float = 540.0
    """Wall-clock cap on training. A run it stops before `steps` is recorded (stopped_by=time) and
    is not promoted; rerunning the same config resumes it from its checkpoint."""

    epoch_images: int = 8000
    """Images per epoch: losses and metrics are logged and a checkpoint written per epoch."""

    truncation: float = 0.7
    """Truncation ψ at sampling time: w = w_avg + ψ (w − w_avg); 1 is none."""

    eval_samples: int = 64
    """Samples scored with MediaPipe at each epoch and at registration."""

    seed: int = 0
    """Seed of the weight initialisation, batch order, latents and noise."""

    gate_min_face_rate: float = 0.9
    """Promotion gate: share of registration samples in which MediaPipe must find a face."""

    gate_frechet_ratio: float = 0.5
    """Promotion gate: the samples' landmark Fréchet distance must be below this × the mean
    training face's. The mean face with per-sample colour jitter (what a GAN that learnt nothing
    but the mean-face offset draws) already scores about 0.7 of it, so beating it means going well
    below; a small model scores about 0.4 after 1,800 steps (735 against 1,900) and 0.2 after 7,000
    (425 against 2,090)."""

    gate_min_spread_share: float = 0.75
    """Promotion gate: the samples' identity spread (median distance from each face's landmark shape
    to its nearest other one) must reach this share of as many training faces' spread. On faces128,
    held-out faces at 32² score about 1.2 and at 128² about 1.0; the mean face in jittered colours
    0.5; a generator stuck on a few faces 0."""

    gate_memorisation_ratio: float = 0.9
    """Promotion gate: the samples' median distance (RMS pixels of the aligned crop) to their
    nearest training face must be at least this × the median nearest-neighbour distance between
    two training faces; held-out real faces score about 1, so 0.9 is a margin for sampling noise
    (0 turns the median check off)."""

    gate_max_copy_share: float = 0.1
    """Promotion gate: the most samples (a share) that may lie closer to a training face than the
    closest two training faces lie to each other (near-copies)."""

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
        if not 0.0 <= self.gate_min_face_rate <= 1.0:
            raise ValueError(f"gate_min_face_rate must lie in [0, 1], got {self.gate_min_face_rate}")
        if not 0.0 <= self.gate_max_copy_share <= 1.0:
            raise ValueError(f"gate_max_copy_share must lie in [0, 1], got {self.gate_max_copy_share}")
        if self.gate_min_spread_share < 0:
            raise ValueError(f"gate_min_spread_share must not be negative, got {self.gate_min_spread_share}")
        if self.gate_frechet_ratio <= 0 or self.gate_memorisation_ratio < 0:
            raise ValueError("gate_frechet_ratio must be positive and gate_memorisation_ratio not negative")
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
    # installs; the diffusion upscaler takes its samples to 64². 1,800 steps is what a quiet
    # 2-core box does in about 9 minutes; the cap gives a busy one 30 minutes before it cuts the
    # run short and so blocks its promotion (a rerun resumes).
    "small": GanConfig(steps=1800, max_seconds=1800.0),
    # GPU sizes: wider networks, longer schedules.
    "base": GanConfig(resolution=64, z_dim=256, w_dim=256, mapping_layers=8,
                      channels={4: 256, 8: 256, 16: 256, 32: 128, 64: 64}, batch_size=64,
                      steps=40000, max_seconds=4 * 3600, epoch_images=50000, ema_half_life_images=10000),
    "large": GanConfig(resolution=128, z_dim=512, w_dim=512, mapping_layers=8,
                       channels={4: 512, 8: 512, 16: 256, 32: 256, 64: 128, 128: 64}, batch_size=64,
                       steps=150000, max_seconds=24 * 3600, epoch_images=100000, ema_half_life_images=10000),
}
