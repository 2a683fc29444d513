"""Metrics of a stylised image: does it still show the same face, in the same place?"""

from __future__ import annotations

import numpy as np

from tasks.reconstruct.landmarks import detect_faces

RIGHT_EYE_OUTER = 33
LEFT_EYE_OUTER = 263


def content_landmark_error(original_u8: np.ndarray, stylised_u8: np.ndarray) -> float | None:
    """Mean 2-D distance between the MediaPipe landmarks (478 points) of the largest face on
    both images, divided by the original's outer-eye-corner distance (points 33 and 263).

    None when the original shows no face; ``inf`` when the stylised image has lost it.
    The stylised image is compared in the original's pixel frame (rescaled when sizes differ).
    """
    original_faces = detect_faces(original_u8, max_faces=1)
    if not original_faces:
        return None
    stylised_faces = detect_faces(stylised_u8, max_faces=1)
    if not stylised_faces:
        return float("inf")
    original = original_faces[0][:, :2]
    scale = np.array([original_u8.shape[1] / stylised_u8.shape[1], original_u8.shape[0] / stylised_u8.shape[0]])
    stylised = stylised_faces[0][:, :2] * scale
    inter_ocular = float(np.linalg.norm(original[RIGHT_EYE_OUTER] - original[LEFT_EYE_OUTER]))
    if inter_ocular <= 0.0:
        return None
    return float(np.linalg.norm(original - stylised, axis=1).mean() / inter_ocular)
