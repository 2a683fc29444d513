"""Square face crop of a portrait: where to cut, and the cut resized to S×S."""

from __future__ import annotations

import numpy as np
from PIL import Image


def square_crop_box(landmarks_px: np.ndarray, image_hw: tuple[int, int], crop_scale: float) -> tuple[int, int, int]:
    """(x0, y0, side) of a square around the face, inside the image.

    The side is crop_scale × the longer side of the landmarks' bounding box, centred on that box,
    shrunk to the image's shorter side if needed, then shifted to lie inside the image.
    """
    height, width = image_hw
    low = landmarks_px[:, :2].min(axis=0)
    high = landmarks_px[:, :2].max(axis=0)
    centre = (low + high) / 2
    side = int(round(crop_scale * float((high - low).max())))
    side = max(1, min(side, height, width))
    x0 = int(round(centre[0] - side / 2))
    y0 = int(round(centre[1] - side / 2))
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return x0, y0, side


def crop_and_resize(image: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
    """The square `box` = (x0, y0, side) of an H×W×3 uint8 image, resized to size×size (Lanczos)."""
    x0, y0, side = box
    patch = image[y0:y0 + side, x0:x0 + side]
    if patch.shape[:2] != (side, side):
        raise ValueError(f"crop box {box} does not fit inside an image of shape {image.shape}")
    if side == size:
        return np.ascontiguousarray(patch)
    return np.asarray(Image.fromarray(patch).resize((size, size), Image.LANCZOS))
