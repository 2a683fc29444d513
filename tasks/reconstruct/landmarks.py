"""MediaPipe face-mesh detection: 478 landmarks per face, in pixel units of the input image."""

from __future__ import annotations

import numpy as np

from tasks.reconstruct.topology import N_LANDMARKS


def detect_faces(image_rgb: np.ndarray, max_faces: int = 4,
                 min_detection_confidence: float = 0.5) -> list[np.ndarray]:
    """Face meshes found in an H×W×3 uint8 RGB image, largest face first.

    Each mesh is a (478, 3) float32 array (x·W, y·H, z·W): x, y in pixels (continuous, pixel
    centres at +0.5), z MediaPipe's relative depth on the x scale (negative = toward the camera).
    An image without a face gives an empty list.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"detect_faces needs an H×W×3 uint8 image, got {image_rgb.shape} {image_rgb.dtype}")
    height, width = image_rgb.shape[:2]
    # A fresh graph per call: static_image_mode keeps no tracking state, and nothing is shared
    # between threads or processes.
    from mediapipe.python.solutions import face_mesh as mp_face_mesh  # heavy: imported on first use

    with mp_face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=max_faces,
                               min_detection_confidence=min_detection_confidence) as face_mesh:
        result = face_mesh.process(np.ascontiguousarray(image_rgb))
    faces = []
    for face in result.multi_face_landmarks or []:
        points = np.array([(p.x * width, p.y * height, p.z * width) for p in face.landmark], dtype=np.float32)
        if points.shape == (N_LANDMARKS, 3):
            faces.append(points)

    def area(points):
        extent = points[:, :2].max(axis=0) - points[:, :2].min(axis=0)
        return float(extent[0] * extent[1])
    return sorted(faces, key=area, reverse=True)
