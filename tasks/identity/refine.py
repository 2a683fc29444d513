"""Refining a photo: its face is aligned to the diffusion model's crop, redrawn by SDEdit at the
upscaler's resolution, and blended back into the photo under a feathered face mask. The result is
kept only where it keeps the photo's detail and landmarks; otherwise the photo stays as it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from scipy.spatial import ConvexHull

from tasks.common.torch_utils import to_tensor_images, to_uint8_images
from tasks.dataset.align import align_face, alignment_template
from tasks.diffusion.bundle import DiffusionBundle
from tasks.quality.metrics import laplacian_variance

LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 33, 263
"""MediaPipe indices of the outer eye corners: their distance is the landmark error's unit."""


@dataclass
class RefinedPhoto:
    """The photo with its face refined, and what was done."""

    image: np.ndarray
    """H×W×3 uint8, the same size as the input."""
    crop_before: np.ndarray
    crop_after: np.ndarray
    noise: np.ndarray
    """SDEdit noise (3×S×S float32) of the refinement."""


def face_mask(size: int, feather: float = 0.06) -> np.ndarray:
    """size² float32 in [0, 1]: the template face's convex hull, shrunk a little and feathered."""
    template = alignment_template(size)
    hull = template[ConvexHull(template).vertices]
    centre = hull.mean(axis=0)
    hull = centre + (hull - centre) * 0.95
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in hull], fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(radius=max(1.0, feather * size)))
    return np.asarray(mask, np.float32) / 255.0


def _warp_to_image(crop: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of the alignment: crop pixels placed back into image space. PIL's AFFINE takes the
    output→input map, which is the image→crop matrix itself."""
    coefficients = tuple(np.asarray(matrix, np.float64).reshape(-1))
    mode = "F" if crop.ndim == 2 else "RGB"
    source = Image.fromarray(crop.astype(np.float32) if mode == "F" else crop, mode)
    warped = source.transform((width, height), Image.AFFINE, coefficients, resample=Image.BICUBIC)
    return np.asarray(warped)


def refine_photo(image: np.ndarray, landmarks_px: np.ndarray, diffusion: DiffusionBundle, strength: float,
                 generator: torch.Generator) -> RefinedPhoto:
    """SDEdit the face of `image` (landmarks: MediaPipe pixels in that image) and blend it back."""
    side = diffusion.high_resolution
    # 1. Align the face to the model's crop.
    aligned = align_face(image, landmarks_px, side)
    # 2. Redraw detail by SDEdit, conditioned on the crop's own low-resolution version.
    device = next(diffusion.parameters()).device
    refined, trace = diffusion.refine_high(to_tensor_images(aligned.crop[None]).to(device), strength, generator)
    crop_after = to_uint8_images(refined)[0]
    # 3. Back into the photo under a feathered mask, so hair, background and edges stay the photo's.
    height, width = image.shape[:2]
    placed = _warp_to_image(crop_after, aligned.matrix, height, width).astype(np.float32)
    mask = _warp_to_image(face_mask(side), aligned.matrix, height, width)[..., None].clip(0.0, 1.0)
    blended = placed * mask + image.astype(np.float32) * (1.0 - mask)
    noise = trace.noise[0].cpu().numpy() if trace.noise is not None else np.zeros((3, side, side), np.float32)
    return RefinedPhoto(image=np.clip(np.round(blended), 0, 255).astype(np.uint8), crop_before=aligned.crop,
                        crop_after=crop_after, noise=noise.astype(np.float32))


def face_region(shape: tuple[int, ...], landmarks_px: np.ndarray, shrink: float = 0.85) -> np.ndarray:
    """H×W bool: the convex hull of the face's landmarks, shrunk towards its centre so the blend's
    feathered edge and the hair line stay out."""
    points = np.asarray(landmarks_px, np.float64)[:, :2]
    hull = points[ConvexHull(points).vertices]
    centre = hull.mean(axis=0)
    hull = centre + (hull - centre) * shrink
    mask = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in hull], fill=255)
    return np.asarray(mask) > 127


def landmark_error(before_px: np.ndarray, after_px: np.ndarray) -> float:
    """Mean 2D landmark displacement in units of the outer-eye-corner distance."""
    before, after = np.asarray(before_px, np.float64)[:, :2], np.asarray(after_px, np.float64)[:, :2]
    eyes = np.linalg.norm(before[LEFT_EYE_OUTER] - before[RIGHT_EYE_OUTER])
    return float(np.linalg.norm(after - before, axis=1).mean() / max(eyes, 1e-6))


@dataclass(frozen=True)
class RefineVerdict:
    """Whether the refined face is kept, and the figures that decided it."""

    keep_refined: bool
    detail_before: float
    """Laplacian variance of the photo's face region."""
    detail_after: float
    """The same of the refined image."""
    landmark_error: float | None
    """Mean landmark displacement / eye-corner distance; None when no face was found after."""
    reason: str

    @property
    def detail_ratio(self) -> float:
        return self.detail_after / max(self.detail_before, 1e-9)

    def as_record(self) -> dict:
        return {"kept": "refined" if self.keep_refined else "photo", "detail_before": round(self.detail_before, 2),
                "detail_after": round(self.detail_after, 2), "detail_ratio": round(self.detail_ratio, 4),
                "landmark_error": None if self.landmark_error is None else round(self.landmark_error, 4),
                "reason": self.reason}


def judge_refinement(photo: np.ndarray, refined: np.ndarray, photo_landmarks: np.ndarray,
                     refined_landmarks: np.ndarray | None, min_detail_ratio: float,
                     max_landmark_error: float) -> RefineVerdict:
    """Keep the refined image only if its face region keeps at least `min_detail_ratio` of the
    photo's Laplacian variance and its landmarks stay within `max_landmark_error` of the photo's."""
    region = face_region(photo.shape, photo_landmarks)
    before, after = laplacian_variance(photo, region), laplacian_variance(refined, region)
    error = None if refined_landmarks is None else landmark_error(photo_landmarks, refined_landmarks)
    ratio = after / max(before, 1e-9)
    problems = []
    if ratio < min_detail_ratio:
        problems.append(f"face detail fell to {ratio:.0%} of the photo's (Laplacian variance {before:.0f} → "
                        f"{after:.0f}; at least {min_detail_ratio:.0%} is kept)")
    if error is None:
        problems.append("no face found in the refined image")
    elif error > max_landmark_error:
        problems.append(f"landmarks moved {error:.3f} eye-widths (at most {max_landmark_error:g})")
    keep = not problems
    reason = ("kept the refined face" if keep else "kept the photo: " + "; ".join(problems))
    return RefineVerdict(keep, before, after, error, reason)


def refine_or_keep(image: np.ndarray, landmarks_px: np.ndarray, diffusion: DiffusionBundle, strength: float,
                   generator: torch.Generator, detect: Callable[[np.ndarray], np.ndarray | None],
                   min_detail_ratio: float, max_landmark_error: float) -> tuple[np.ndarray, RefinedPhoto, RefineVerdict]:
    """Refine the photo's face, then judge it: (the image to use, the refinement, the verdict).
    `detect` returns an image's (478, ≥2) face landmarks or None."""
    result = refine_photo(image, landmarks_px, diffusion, strength, generator)
    verdict = judge_refinement(image, result.image, landmarks_px, detect(result.image), min_detail_ratio,
                               max_landmark_error)
    return (result.image if verdict.keep_refined else image), result, verdict
