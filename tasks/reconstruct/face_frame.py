"""A face-aligned coordinate frame and face-size measures, so geometry works on tilted heads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.reconstruct.canonical_shape import frontal_frame
from tasks.reconstruct.topology import CHIN_BOTTOM, FOREHEAD_TOP, MOUTH_CORNERS_INNER, face_topology


@dataclass(frozen=True)
class FaceFrame:
    """Origin between the eyes; x from the subject's right eye to the left eye, y chin → forehead,
    z out of the face (toward the camera for a frontal face)."""

    origin: np.ndarray
    """(3,) midpoint of the two eye-contour centroids, world units."""

    axes: np.ndarray
    """(3, 3) rotation; rows are the frame's x, y, z axes in world coordinates."""

    inter_ocular: float
    """Distance between the eye-contour centroids, world units."""

    face_height: float
    """Distance from the forehead-top landmark to the chin landmark, world units."""

    mouth_width: float
    """Distance between the inner-lip mouth corners, world units."""

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """World points → frame coordinates."""
        return (points - self.origin) @ self.axes.T

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Frame coordinates → world points."""
        return points @ self.axes + self.origin

    def vectors_to_world(self, vectors: np.ndarray) -> np.ndarray:
        """Frame-coordinate offsets → world offsets."""
        return vectors @ self.axes


def face_frame(landmarks_world: np.ndarray) -> FaceFrame:
    """The face frame of a (≥478, 3) world-coordinate landmark array."""
    topology = face_topology()
    points = np.asarray(landmarks_world, np.float64)
    axes = frontal_frame(points, topology.eye_left.loop, topology.eye_right.loop, FOREHEAD_TOP, CHIN_BOTTOM)
    left, right = points[topology.eye_left.loop].mean(axis=0), points[topology.eye_right.loop].mean(axis=0)
    return FaceFrame(
        origin=(left + right) / 2, axes=axes,
        inter_ocular=float(np.linalg.norm(left - right)),
        face_height=float(np.linalg.norm(points[FOREHEAD_TOP] - points[CHIN_BOTTOM])),
        mouth_width=float(np.linalg.norm(points[MOUTH_CORNERS_INNER[0]] - points[MOUTH_CORNERS_INNER[1]])))
