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


STYLE_PRESET_NAMES = ("oil", "sketch", "mosaic", "watercolour")
"""The presets a feed-forward network can be trained for (tasks.style.presets.STYLE_PRESETS)."""


@dataclass(frozen=True)
class StyleNetworkConfig:
    """A slim Johnson-style feed-forward network per style preset (strided-conv encoder, residual
    blocks, upsampling decoder, instance norm), trained by `avatarflow train` on the dataset's
    faces with the optimisation path's own loss, and how it is judged before promotion."""

    presets: tuple[str, ...] = STYLE_PRESET_NAMES
    """Presets to train a network for, one registered model each (avatarflow-style-<preset>);
    empty trains none."""

    size: int = 128
    """Working side in pixels: training crops are this size, and in production the texture is
    stylised at this longer side and the residual brought back to full size (as the optimisation
    path does at StyleConfig.size). The style's texture scale is relative to it."""

    patch: int = 64
    """Side of the random square patch of each batch that a training step sees (0: whole faces).
    Patches cut the cost per step; the style's scale stays relative to `size`."""

    channels: tuple[int, int, int] = (16, 32, 48)
    """Channels at full, half and quarter resolution; the residual blocks work at quarter."""

    residual_blocks: int = 3
    """Residual blocks (two 3×3 convs each) at quarter resolution."""

    steps: int = 300
    """Adam steps."""

    batch_size: int = 4
    """Faces per step."""

    learning_rate: float = 0.01
    """Adam step size."""

    held_out: int = 4
    """Faces kept out of training; both paths stylise them for the promotion gate (the
    optimisation path costs seconds per face, so few)."""

    log_every: int = 50
    """Steps between logged loss figures."""

    max_seconds: float = 900.0
    """Wall-clock cap per preset. A run it stops before `steps` is recorded and not promoted."""

    seed: int = 0
    """Seed of the weight initialisation, the held-out split and the batch order."""

    gate_gram_ratio: float = 2.0
    """Promotion gate: the network's mean Gram loss on the held-out faces may be at most this
    many times the optimisation path's on the same faces."""

    gate_landmark_tolerance: float = 0.0
    """Promotion gate: the network's mean landmark error may exceed the optimisation path's by
    at most this much (a share of the inter-ocular distance)."""

    def __post_init__(self) -> None:
        unknown = [name for name in self.presets if name not in STYLE_PRESET_NAMES]
        if unknown:
            raise ValueError(f"presets must name style presets ({', '.join(STYLE_PRESET_NAMES)}), got {self.presets}")
        object.__setattr__(self, "presets", tuple(self.presets))
        if self.size < 16 or self.size % 4:
            raise ValueError(f"size must be a multiple of 4, at least 16, got {self.size}")
        if self.patch < 0 or self.patch % 4 or self.patch > self.size:
            raise ValueError(f"patch must be 0 or a multiple of 4 up to size {self.size}, got {self.patch}")
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels must be three positive ints, got {self.channels}")
        object.__setattr__(self, "channels", tuple(self.channels))
        for name in ("residual_blocks", "steps", "held_out"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("batch_size", "log_every", "held_out"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0.0 or self.max_seconds <= 0.0:
            raise ValueError("learning_rate and max_seconds must be positive")
        if self.gate_gram_ratio <= 0.0 or self.gate_landmark_tolerance < 0.0:
            raise ValueError("gate_gram_ratio must be positive and gate_landmark_tolerance not negative")
