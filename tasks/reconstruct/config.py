"""Settings of the reconstruct stage: face detection, cropping, mouth interior and blendshape sizes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReconstructConfig:
    """How a portrait becomes a face rig (mesh, textures, blendshapes) on a square crop."""

    max_faces: int = 10
    """Most faces MediaPipe may report in one portrait; the largest one is used."""

    min_detection_confidence: float = 0.5
    """MediaPipe face-detector score below which a face is not reported."""

    detection_max_side: int = 1280
    """Portraits with a longer side are downscaled to this size for the first detection."""

    crop_scale: float = 2.2
    """Side of the square crop as a multiple of the face's landmark box (its longer side),
    shrunk to fit inside the portrait."""

    band_fraction: int = 8
    """Height of the mouth-colour band under the photo in the texture: B = S // band_fraction."""

    canonical_texture_size: int = 256
    """Side in pixels of the photo unwrapped into the canonical UV layout."""

    fill_eye_holes: bool = True
    """Close each eye hole with triangles between the lids, textured from the photo, so the eyes
    move with the head instead of showing the background photo."""

    mouth_depth: float = 0.6
    """Depth of the mouth cavity behind the inner lips, as a multiple of the mouth width."""

    teeth_depth: float = 0.12
    """Distance of the teeth behind the inner lip line, as a multiple of the mouth width."""

    jaw_open_degrees: float = 24.0
    """Jaw rotation of jawOpen = 1 about the jaw hinge."""

    rest_close_threshold: float = 0.03
    """Largest inner-lip gap of the photo, in inter-ocular distances, above which its mouth counts
    as open: the rig then closes the lips at rest (the photo's texture stays on them), so the rest
    frame is the photo with the lips closed and the rig's own mouth interior shows when it talks."""

    rest_close_upper_share: float = 0.35
    """Share of an open photo's lip gap that the upper lip travels when closing at rest; the lower
    lip travels the rest."""

    eyeballs: bool = True
    """Put an eyeball behind each eye hole (photo-textured front, sclera-coloured sides) that gaze
    rotates; False closes the holes with flat lid triangles instead (no gaze)."""

    eyeball_radius: float = 0.6
    """Eyeball radius, in eye widths (corner to corner)."""

    eyeball_recess: float = 0.03
    """How far, in eye widths, the eyeball surface stays behind the lids, so it never shows through them."""

    eye_yaw_degrees: float = 28.0
    """Eyeball turn of eyeLookIn/Out = 1, left or right."""

    eye_pitch_degrees: float = 15.0
    """Eyeball turn of eyeLookUp/Down = 1."""

    def __post_init__(self) -> None:
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {self.max_faces}")
        if not 0.0 < self.min_detection_confidence < 1.0:
            raise ValueError(f"min_detection_confidence must lie in (0, 1), got {self.min_detection_confidence}")
        if self.crop_scale < 1.0:
            raise ValueError(f"crop_scale must be at least 1, got {self.crop_scale}")
        if self.band_fraction < 2:
            raise ValueError(f"band_fraction must be at least 2, got {self.band_fraction}")
        if self.canonical_texture_size < 16:
            raise ValueError(f"canonical_texture_size must be at least 16, got {self.canonical_texture_size}")
        if not 0.0 <= self.rest_close_upper_share <= 1.0:
            raise ValueError(f"rest_close_upper_share must lie in [0, 1], got {self.rest_close_upper_share}")
        if self.eyeball_radius <= 0.5:
            raise ValueError(f"eyeball_radius must exceed half an eye width, got {self.eyeball_radius}")
        if not 0.0 < self.teeth_depth < self.mouth_depth:
            raise ValueError("teeth_depth must be positive and smaller than mouth_depth")
