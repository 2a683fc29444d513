"""Refining a photo: its face is aligned to the diffusion model's crop, redrawn by SDEdit at the
upscaler's resolution, and blended back into the photo under a feathered face mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from scipy.spatial import ConvexHull

from tasks.common.torch_utils import to_tensor_images, to_uint8_images
from tasks.dataset.align import align_face, alignment_template
from tasks.diffusion.bundle import DiffusionBundle


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
