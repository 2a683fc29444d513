"""Settings of `avatarflow synthesize`: image size, renderer, and the ranges every sample is drawn from."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Range = tuple[float, float]
"""(low, high), inclusive; a sample draws uniformly between them."""


class SynthesisConfig(BaseModel):
    """One data set's rendering and sampling settings. Angles are degrees; the head pose is the
    rig's (pitch, yaw, roll), so yaw is the head turning against a camera that looks at the face."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution: Annotated[int, Field(ge=32, le=4096, multiple_of=2)] = 512
    """Side of the square images, in pixels."""
    cycles_samples: Annotated[int, Field(ge=1, le=4096)] = 2
    """Path-tracing samples per pixel."""
    denoise: bool = True
    """OpenImageDenoise (fast mode) on the colour image; the labels do not pass through it. A 512²
    image on one core: about 2.4 s with 2 samples denoised, 3.4 s with 4 (which look the same)."""
    cycles_device: Literal["auto", "cpu", "gpu"] = "auto"
    image_format: Literal["png", "zarr"] = "png"
    """PNG files under images/, or one N×H×W×3 uint8 array in images.zarr chunked like the labels."""
    samples_per_shard: Annotated[int, Field(ge=1, le=10_000)] = 16
    """Samples one task renders in one Blender process. A shard holds whole identities (at least
    one), so every label array's chunk along N is one shard's samples."""
    yaw: Range = (-45.0, 45.0)
    pitch: Range = (-20.0, 20.0)
    roll: Range = (-15.0, 15.0)
    lens_mm: Range = (35.0, 105.0)
    """Focal length on a 36 mm sensor."""
    face_fill: Range = (0.4, 0.65)
    """Width of the face's landmark box as a share of the image width, at the frontal view."""
    camera_orbit: Annotated[float, Field(ge=0.0, le=30.0)] = 6.0
    """Largest angle of the camera off the face's frontal axis, on top of the head pose."""
    target_jitter: Annotated[float, Field(ge=0.0, le=0.5)] = 0.05
    """Largest offset of the look-at point from the face centre, in face widths."""
    emotion_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    """Share of samples whose expression starts from an emotion of the manifest vocabulary."""
    extra_channels: Annotated[float, Field(ge=0.0, le=20.0)] = 3.0
    """Mean number of further ARKit channels switched on at random in each sample (Poisson)."""
    pair_coupling: Annotated[float, Field(ge=0.0, le=1.0)] = 0.8
    """Probability that a Left/Right channel pair moves together (else only one side moves)."""
    shape_variation: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    """Scale of each identity's face-shape offset along the main components of the training faces'
    landmark shapes, in standard deviations (0: the reconstructed shape as it is)."""
    shape_components: Annotated[int, Field(ge=1, le=64)] = 8
    """Components of that shape model an identity moves along."""
    area_lights: tuple[int, int] = (1, 3)
    """Fewest and most area lights per sample, on top of the sky."""
    sky_strength: Range = (0.05, 0.25)
    light_power: Range = (3.0, 15.0)
    """Area-light power in watts per squared camera distance, so irradiance does not depend on scale."""
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Shares of identities in train, val and test; an identity's samples all go to one split."""
    timeout_seconds: Annotated[float, Field(gt=0)] = 3600.0
    """Wall-clock limit of one shard's Blender process."""

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> "SynthesisConfig":
        for name in ("yaw", "pitch", "roll", "lens_mm", "face_fill", "sky_strength", "light_power"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} range ({low}, {high}) has low > high")
        if not (0.05 <= self.face_fill[0] and self.face_fill[1] <= 1.0):
            raise ValueError(f"face_fill {self.face_fill} must lie within [0.05, 1]")
        if not (-90.0 < self.yaw[0] and self.yaw[1] < 90.0):
            raise ValueError(f"yaw {self.yaw} must lie within (-90, 90)")
        if self.lens_mm[0] <= 0:
            raise ValueError(f"lens_mm {self.lens_mm} must be positive")
        low, high = self.area_lights
        if not 0 <= low <= high <= 8:
            raise ValueError(f"area_lights {self.area_lights} must satisfy 0 <= low <= high <= 8")
        if any(share < 0 for share in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"split {self.split} must be three non-negative shares summing to 1")
        return self
