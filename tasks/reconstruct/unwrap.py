"""Piecewise-affine unwrap of the photo into the canonical UV layout."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def unwrap_to_canonical(image: np.ndarray, landmarks_px: np.ndarray, faces: np.ndarray,
                        uv_canonical: np.ndarray, size: int) -> np.ndarray:
    """The photo warped triangle by triangle into canonical UV space: size×size×3 uint8.

    image: H×W×3 uint8; landmarks_px: (N, ≥2) pixel positions of the vertices in that image;
    faces: (F, 3) triangles over those vertices; uv_canonical: (N, 2) UVs (v up, row 0 is v = 1).
    Pixels that no triangle covers take the colour of the nearest covered pixel.
    """
    height, width = image.shape[:2]
    target = np.asarray(uv_canonical, np.float64)[:, :2] * size
    target[:, 1] = size - target[:, 1]  # v up → row down, in pixel units
    source = np.asarray(landmarks_px, np.float64)[:, :2]

    target_index: list[np.ndarray] = []
    source_points: list[np.ndarray] = []
    for tri in np.asarray(faces):
        t = target[tri]
        edge = np.array([t[1] - t[0], t[2] - t[0]]).T
        det = np.linalg.det(edge)
        if abs(det) < 1e-12:
            continue
        low = np.maximum(np.floor(t.min(axis=0) - 0.5).astype(int), 0)
        high = np.minimum(np.ceil(t.max(axis=0) + 0.5).astype(int), size)
        if (high <= low).any():
            continue
        cols, rows = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]))
        centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
        weights_12 = np.linalg.solve(edge, (centres - t[0]).T).T
        bary = np.concatenate([1 - weights_12.sum(axis=1, keepdims=True), weights_12], axis=1)
        inside = (bary >= -1e-6).all(axis=1)
        if not inside.any():
            continue
        target_index.append(rows.ravel()[inside] * size + cols.ravel()[inside])
        source_points.append(bary[inside] @ source[tri])

    output = np.zeros((size * size, 3), np.float64)
    covered = np.zeros(size * size, bool)
    if target_index:
        index = np.concatenate(target_index)
        points = np.concatenate(source_points)
        # Pixel centres sit at +0.5, so sample coordinate = position - 0.5.
        coords = [np.clip(points[:, 1] - 0.5, 0, height - 1), np.clip(points[:, 0] - 0.5, 0, width - 1)]
        for channel in range(3):
            output[index, channel] = ndimage.map_coordinates(
                image[..., channel].astype(np.float64), coords, order=1, mode="nearest")
        covered[index] = True
    output = output.reshape(size, size, 3)
    covered = covered.reshape(size, size)
    if covered.any() and not covered.all():
        _, (near_rows, near_cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
        output = output[near_rows, near_cols]
    return np.clip(np.round(output), 0, 255).astype(np.uint8)
