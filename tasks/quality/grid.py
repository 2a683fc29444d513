"""Sample grids for logging."""

from __future__ import annotations

import numpy as np


def image_grid(images_u8: np.ndarray, columns: int = 8) -> np.ndarray:
    """N×H×W×3 uint8 → one (rows·H)×(columns·W)×3 image, black where the last row runs short."""
    n, height, width, _ = images_u8.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * columns, height, width, 3), np.uint8)
    grid[:n] = images_u8
    return grid.reshape(rows, columns, height, width, 3).transpose(0, 2, 1, 3, 4).reshape(rows * height, columns * width, 3)
