"""Piecewise-affine unwrap of the photo into the canonical UV layout.

The layout is rasterised once per (faces, UVs, size): which pixel lies in which triangle, with which
barycentric weights, and which covered pixel fills each uncovered one. Unwrapping an image is then a
few array operations, so a dataset build reuses one `CanonicalUnwrapper` for every face.
"""

from __future__ import annotations

import numpy as np


class CanonicalUnwrapper:
    """Piecewise-affine unwrap into a fixed size×size canonical UV layout (v up, row 0 is v = 1)."""

    def __init__(self, faces: np.ndarray, uv_canonical: np.ndarray, size: int):
        from scipy import ndimage

        self.size = size
        self.faces = np.asarray(faces, np.int64)
        target = np.asarray(uv_canonical, np.float64)[:, :2] * size
        target[:, 1] = size - target[:, 1]
        pixel_index, triangle_index, weights = [], [], []
        for number, tri in enumerate(self.faces):
            t = target[tri]
            edge = np.array([t[1] - t[0], t[2] - t[0]]).T
            if abs(np.linalg.det(edge)) < 1e-12:
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
            pixel_index.append(rows.ravel()[inside] * size + cols.ravel()[inside])
            triangle_index.append(np.full(int(inside.sum()), number))
            weights.append(bary[inside])
        pixel_index = np.concatenate(pixel_index)
        # A pixel on a shared edge belongs to the last triangle that covers it.
        last = len(pixel_index) - 1 - np.unique(pixel_index[::-1], return_index=True)[1]
        self.pixel_index = pixel_index[last]
        self.triangle_index = np.concatenate(triangle_index)[last]
        self.weights = np.concatenate(weights)[last]
        covered = np.zeros(size * size, bool)
        covered[self.pixel_index] = True
        covered = covered.reshape(size, size)
        if covered.all():
            self.fill_source = None
        else:
            _, (near_rows, near_cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
            self.fill_source = (near_rows, near_cols)

    def __call__(self, image: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
        """The H×W×3 uint8 image unwrapped by its (N, ≥2) vertex pixel positions: size×size×3 uint8."""
        from scipy import ndimage

        height, width = image.shape[:2]
        source = np.asarray(landmarks_px, np.float64)[:, :2]
        corners = source[self.faces[self.triangle_index]]  # (P, 3, 2)
        points = np.einsum("pk,pkd->pd", self.weights, corners)
        # Pixel centres sit at +0.5, so sample coordinate = position - 0.5.
        coords = [np.clip(points[:, 1] - 0.5, 0, height - 1), np.clip(points[:, 0] - 0.5, 0, width - 1)]
        output = np.zeros((self.size * self.size, 3), np.float64)
        for channel in range(3):
            output[self.pixel_index, channel] = ndimage.map_coordinates(
                image[..., channel].astype(np.float64), coords, order=1, mode="nearest")
        output = output.reshape(self.size, self.size, 3)
        if self.fill_source is not None:
            output = output[self.fill_source]
        return np.clip(np.round(output), 0, 255).astype(np.uint8)


def unwrap_to_canonical(image: np.ndarray, landmarks_px: np.ndarray, faces: np.ndarray,
                        uv_canonical: np.ndarray, size: int) -> np.ndarray:
    """The photo warped triangle by triangle into canonical UV space: size×size×3 uint8.

    image: H×W×3 uint8; landmarks_px: (N, ≥2) pixel positions of the vertices in that image;
    faces: (F, 3) triangles over those vertices; uv_canonical: (N, 2) UVs (v up, row 0 is v = 1).
    Pixels that no triangle covers take the colour of the nearest covered pixel.
    """
    return CanonicalUnwrapper(faces, uv_canonical, size)(image, landmarks_px)
