"""Settings of the identity stage: how generated faces are drawn, refined and checked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdentityConfig:
    """How `generate:<seed>` rows draw a face and how `refine=true` rows refine a photo."""

    max_draws: int = 8
    """Latents a generate row may draw until MediaPipe finds a face; the row fails after that."""

    truncation: float | None = None
    """Truncation ψ of the GAN draw; None uses the value the model was trained to sample with."""

    generate_strength: float = 0.1
    """SDEdit strength applied to each GAN sample before upscaling (0 = no refinement). Briefly
    trained CPU models add artefacts above about 0.15; GPU-trained ones take 0.3 well."""

    upscale_strength: float | None = None
    """Share of the schedule the 2× upscaler samples detail over; None uses the model's own."""

    refine_strength: float = 0.2
    """SDEdit strength of `refine=true` photo rows, applied to the aligned face crop."""

    refine_min_detail_ratio: float = 0.8
    """The refined face is kept only if its Laplacian variance (high-frequency detail) is at least
    this share of the photo's face region's; otherwise the row keeps the photo."""

    refine_max_landmark_error: float = 0.05
    """The refined face is kept only if its MediaPipe landmarks stay within this mean distance of
    the photo's, in units of the outer-eye-corner distance (identity is kept)."""

    portrait_side: int = 512
    """Side of the portrait a generated face is resized to before reconstruction."""

    device: str = "auto"
    """torch device of generation and refinement: auto, cpu or cuda."""

    def __post_init__(self) -> None:
        if self.max_draws < 1:
            raise ValueError(f"max_draws must be at least 1, got {self.max_draws}")
        if self.truncation is not None and not 0.0 < self.truncation <= 1.0:
            raise ValueError(f"truncation must lie in (0, 1], got {self.truncation}")
        for name in ("generate_strength", "refine_strength"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.refine_min_detail_ratio <= 10.0 or self.refine_max_landmark_error <= 0:
            raise ValueError("refine_min_detail_ratio must lie in [0, 10] and refine_max_landmark_error be positive")
        if self.upscale_strength is not None and not 0.0 < self.upscale_strength <= 1.0:
            raise ValueError(f"upscale_strength must lie in (0, 1], got {self.upscale_strength}")
        if self.portrait_side < 128:
            raise ValueError(f"portrait_side must be at least 128, got {self.portrait_side}")
