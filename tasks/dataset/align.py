"""Face alignment: a similarity transform fitted to MediaPipe landmarks maps a face onto a fixed template.

Pixel positions are continuous with pixel centres at +0.5 (MediaPipe's convention), so a template
for an S×S crop is the template for a 1×1 crop times S.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from PIL import Image

from tasks.reconstruct.canonical_shape import load_canonical_shape

IRIS_CENTRES = (468, 473)
"""MediaPipe indices of the two iris centres: their midpoint is the eye line's centre."""

FOREHEAD_TOP = 10
"""MediaPipe index of the mid-forehead point at the top of the face oval."""

CHIN_BOTTOM = 152
"""MediaPipe index of the bottom of the chin."""

# Warps that shrink more than this are preceded by a Lanczos resize, so they do not alias.
_MIN_DIRECT_SCALE = 0.8


class AlignedFace(NamedTuple):
    """A face warped onto the template."""

    crop: np.ndarray
    """size×size×3 uint8 aligned crop."""

    matrix: np.ndarray
    """(2, 3) affine map from source-image pixels to crop pixels."""

    landmarks: np.ndarray
    """The landmarks mapped into the crop: x, y in crop pixels (a z column, if given, scaled alike)."""


@lru_cache(maxsize=8)
def _unit_template(face_scale: float, eye_height: float) -> np.ndarray:
    shape = load_canonical_shape()[:, :2].astype(np.float64)
    eye_centre = shape[list(IRIS_CENTRES)].mean(axis=0)
    face_height = shape[FOREHEAD_TOP, 1] - shape[CHIN_BOTTOM, 1]
    scale = face_scale / face_height
    # Canonical y points up; image rows point down.
    x = 0.5 + (shape[:, 0] - eye_centre[0]) * scale
    y = eye_height - (shape[:, 1] - eye_centre[1]) * scale
    template = np.stack([x, y], axis=1)
    template.setflags(write=False)
    return template


def alignment_template(size: int, face_scale: float = 0.72, eye_height: float = 0.4) -> np.ndarray:
    """(478, 2) pixel positions of the canonical face in a size×size crop.

    The eye centres sit at `eye_height`·size from the top, centred left to right, and the face
    spans `face_scale`·size from mid forehead (landmark 10) to chin (landmark 152).
    """
    if size < 1:
        raise ValueError(f"template size must be positive, got {size}")
    return _unit_template(float(face_scale), float(eye_height)) * size


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    (N, 2) points `src` onto `dst` (Umeyama 1991). Returns the 2×3 matrix [s·R | t]."""
    src = np.asarray(src, np.float64)[:, :2]
    dst = np.asarray(dst, np.float64)[:, :2]
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"fit_similarity needs two equal (N≥2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / len(src)
    if src_var <= 0:
        raise ValueError("fit_similarity needs source points that are not all equal")
    u, d, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(sign) @ vt
    scale = (d * sign).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points mapped by a 2×3 affine matrix."""
    points = np.asarray(points, np.float64)[:, :2]
    return points @ matrix[:, :2].T + matrix[:, 2]


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Bicubic warp of an H×W×3 uint8 image by a source→crop affine into a size×size crop;
    outside the image, edge pixels are repeated."""
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    # Pad with repeated edges wherever the crop reaches outside the image (plus the kernel's reach).
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
    height, width = image.shape[:2]
    reach = 3
    left = max(0, int(np.ceil(-corners[:, 0].min())) + reach)
    top = max(0, int(np.ceil(-corners[:, 1].min())) + reach)
    right = max(0, int(np.ceil(corners[:, 0].max() - width)) + reach)
    bottom = max(0, int(np.ceil(corners[:, 1].max() - height)) + reach)
    if left or top or right or bottom:
        image = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="edge")
        inverse = inverse + np.array([[0.0, 0.0, left], [0.0, 0.0, top]])
    # PIL maps each output pixel centre through `inverse` and samples around the input pixel centres,
    # the same continuous-pixel convention as the landmarks.
    warped = Image.fromarray(image).transform((size, size), Image.AFFINE, tuple(inverse.ravel()),
                                              resample=Image.BICUBIC)
    return np.asarray(warped)


def align_face(image_u8: np.ndarray, landmarks_px: np.ndarray, size: int,
               template: np.ndarray | None = None) -> AlignedFace:
    """Warp the face in `image_u8` (H×W×3 uint8) so its (478, ≥2) landmarks best match `template`
    (pixel positions in a size×size crop; default `alignment_template(size)`). Bicubic, with a
    Lanczos pre-shrink for faces much larger than the crop; edges repeat outside the image."""
    if image_u8.ndim != 3 or image_u8.shape[2] != 3 or image_u8.dtype != np.uint8:
        raise ValueError(f"align_face needs an H×W×3 uint8 image, got {image_u8.shape} {image_u8.dtype}")
    landmarks_px = np.asarray(landmarks_px, np.float64)
    template = alignment_template(size) if template is None else np.asarray(template, np.float64)
    if landmarks_px.shape[0] != template.shape[0]:
        raise ValueError(f"{landmarks_px.shape[0]} landmarks do not match a template of {template.shape[0]}")
    matrix = fit_similarity(landmarks_px[:, :2], template)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))

    source, source_matrix = image_u8, matrix
    if scale < _MIN_DIRECT_SCALE:
        # Shrink with a Lanczos filter first so the warp itself scales by about 1.
        height, width = image_u8.shape[:2]
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        source = np.asarray(Image.fromarray(image_u8).resize((new_w, new_h), Image.LANCZOS))
        source_matrix = matrix @ np.diag([width / new_w, height / new_h, 1.0])
    crop = _warp(source, source_matrix, size)

    mapped = apply_affine(matrix, landmarks_px)
    if landmarks_px.shape[1] > 2:
        mapped = np.concatenate([mapped, landmarks_px[:, 2:] * scale], axis=1)
    return AlignedFace(crop=crop, matrix=matrix, landmarks=mapped.astype(np.float32))
