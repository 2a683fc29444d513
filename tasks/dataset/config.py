"""Settings of the aligned face dataset builder."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetConfig:
    """How faces are found, aligned and sampled into the training dataset."""

    crop_sizes: tuple[int, ...] = (64, 128)
    """Sides in pixels of the aligned square crops; the largest is warped, the others resized from it."""

    uv_size: int = 128
    """Side in pixels of the canonical-UV texture unwrapped from the largest crop."""

    face_scale: float = 0.72
    """Fraction of the crop side that the face spans from mid forehead to chin (FFHQ-like framing:
    the whole face with a margin of hair above and below the chin)."""

    eye_height: float = 0.4
    """Height of the eye line in the crop, as a fraction of its side from the top."""

    video_frame_stride: int = 10
    """Take every n-th decoded frame of a video."""

    max_frames_per_video: int = 30
    """At most this many frames from each video."""

    max_images: int | None = None
    """Cap on the number of images and frames used, sampled balanced by label with `seed`; None for all."""

    detection_upscale_below: int = 0
    """Images whose shorter side is below this many pixels are upscaled ×2 (bicubic) before face
    detection; 0 never upscales (on 128² synthetic faces upscaling did not raise the hit rate)."""

    min_detection_confidence: float = 0.5
    """MediaPipe face-detector score below which a face is not reported."""

    seed: int = 0
    """Seed of the balanced sampling under `max_images`."""

    def __post_init__(self) -> None:
        sizes = tuple(self.crop_sizes)
        if not sizes or any(not isinstance(s, int) or s < 16 for s in sizes):
            raise ValueError(f"crop_sizes must be integers of at least 16, got {self.crop_sizes}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"crop_sizes must be distinct, got {self.crop_sizes}")
        object.__setattr__(self, "crop_sizes", tuple(sorted(sizes)))
        if self.uv_size < 16:
            raise ValueError(f"uv_size must be at least 16, got {self.uv_size}")
        if not 0.2 <= self.face_scale <= 1.0:
            raise ValueError(f"face_scale must lie in [0.2, 1], got {self.face_scale}")
        if not 0.1 <= self.eye_height <= 0.6:
            raise ValueError(f"eye_height must lie in [0.1, 0.6], got {self.eye_height}")
        if self.video_frame_stride < 1:
            raise ValueError(f"video_frame_stride must be at least 1, got {self.video_frame_stride}")
        if self.max_frames_per_video < 1:
            raise ValueError(f"max_frames_per_video must be at least 1, got {self.max_frames_per_video}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be at least 1 or None, got {self.max_images}")
        if self.detection_upscale_below < 0:
            raise ValueError(f"detection_upscale_below must be 0 or more, got {self.detection_upscale_below}")
        if not 0.0 < self.min_detection_confidence < 1.0:
            raise ValueError(f"min_detection_confidence must lie in (0, 1), got {self.min_detection_confidence}")

    @property
    def largest_crop(self) -> int:
        """Side of the largest crop: the one landmarks and UV textures refer to."""
        return max(self.crop_sizes)
