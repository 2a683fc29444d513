"""Settings of the style stage: random-feature Gram style transfer plus Lab colour transfer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StyleConfig:
    """How a texture takes on the look of a style image while keeping its content (the face)."""

    size: int = 256
    """Working side in pixels: the image is optimised with its longer side at this size (never
    upscaled), then brought back to the input size."""

    steps: int = 60
    """Adam steps on the working image."""

    learning_rate: float = 0.03
    """Adam step size on pixel values in [−1, 1]."""

    style_weight: float = 1.0
    """Weight of the style loss: the Gram-matrix distance to the style image, summed over the
    feature scales, each relative to the squared norm of the style's Gram matrix."""

    centred_gram: bool = True
    """Match the covariance of the features (Gram matrices of mean-free features) plus their
    means, instead of the raw Gram matrices that a style's average colour dominates."""

    content_weight: float = 1.5
    """Weight of the content loss: the feature distance to the colour-transferred content,
    relative to the content's feature norm, on the scales named by ``content_layers``."""

    content_layers: tuple[int, ...] = (1, 2)
    """Indices into ``feature_channels`` of the scales whose features the content loss keeps."""

    tv_weight: float = 0.2
    """Weight of the total-variation loss (mean absolute neighbour difference), which keeps
    the optimisation from adding pixel noise."""

    colour_strength: float = 0.8
    """Blend of the Lab colour transfer, 0 (content colours) to 1 (the style's Lab mean and
    spread per channel)."""

    preserve_detail: bool = True
    """Bring the result back to the input size by adding the upsampled stylisation residual to
    the full-size colour-transferred input (keeps its sharpness); False upsamples the working
    image itself."""

    init_noise: float = 0.05
    """Standard deviation of the seeded Gaussian noise added to the starting image (pixel
    units in [−1, 1]), so texture can grow in flat regions."""

    feature_seed: int = 0
    """Seed of the random weights of the feature network; fixed so runs are comparable."""

    feature_channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the feature network's blocks, finest scale first; each block halves the
    resolution of the previous one."""

    device: str = "auto"
    """Torch device: "auto" (CUDA where present, else the CPU), "cpu" or "cuda"."""

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size must be at least 16, got {self.size}")
        if self.steps < 0:
            raise ValueError(f"steps must not be negative, got {self.steps}")
        if self.learning_rate <= 0.0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("style_weight", "content_weight", "tv_weight", "init_noise"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.colour_strength <= 1.0:
            raise ValueError(f"colour_strength must lie in [0, 1], got {self.colour_strength}")
        if not self.feature_channels or min(self.feature_channels) < 1:
            raise ValueError(f"feature_channels must be positive ints, got {self.feature_channels}")
        if self.size >> (len(self.feature_channels) - 1) < 4:
            raise ValueError(f"size {self.size} is too small for {len(self.feature_channels)} feature scales")
        if any(not 0 <= index < len(self.feature_channels) for index in self.content_layers):
            raise ValueError(f"content_layers {self.content_layers} must index feature_channels "
                             f"(0..{len(self.feature_channels) - 1})")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
