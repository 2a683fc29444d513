"""The canonical (mean, frontal) 478-point face shape behind the canonical UV layout.

The mediapipe wheel does not ship its canonical face model, so the canonical shape is the
generalized-Procrustes mean of MediaPipe meshes detected on frontal portraits, rotated to face
+z with the eye line along +x. It is stored as text next to this module (`canonical_face.txt`)
and rebuilt with:

    python -m tasks.reconstruct.canonical_shape PORTRAIT_DIR [PORTRAIT_DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CANONICAL_SHAPE_PATH = Path(__file__).with_name("canonical_face.txt")
"""Text file of the canonical shape: 478 rows of x y z (x right, y up, z toward the camera)."""


def _similarity_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Source points moved by the rotation, uniform scale and translation that best fit target."""
    source_centred = source - source.mean(axis=0)
    target_centred = target - target.mean(axis=0)
    u, s, vt = np.linalg.svd(source_centred.T @ target_centred)
    reflection = np.sign(np.linalg.det(u @ vt))
    correction = np.diag([1.0, 1.0, reflection])
    rotation = u @ correction @ vt
    scale = (s * np.diag(correction)).sum() / (source_centred ** 2).sum()
    return scale * source_centred @ rotation + target.mean(axis=0)


def frontal_frame(points: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray,
                  forehead: int, chin: int) -> np.ndarray:
    """Rotation (3×3, rows = axes) whose x runs right eye → left eye and y chin → forehead."""
    x_axis = points[left_eye].mean(axis=0) - points[right_eye].mean(axis=0)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = points[forehead] - points[chin]
    y_axis -= x_axis * (y_axis @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    return np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])


def mean_face_shape(meshes: list[np.ndarray], left_eye: np.ndarray, right_eye: np.ndarray,
                    forehead: int, chin: int, iterations: int = 10) -> np.ndarray:
    """Procrustes mean of (478,3) world-convention meshes (x right, y up, z toward the camera),
    frontalized, centred between the eyes and scaled to unit inter-ocular distance."""
    if not meshes:
        raise ValueError("mean_face_shape needs at least one mesh")
    mean = np.asarray(meshes[0], np.float64)
    for _ in range(iterations):
        aligned = [_similarity_align(np.asarray(m, np.float64), mean) for m in meshes]
        mean = np.mean(aligned, axis=0)
    rotation = frontal_frame(mean, left_eye, right_eye, forehead, chin)
    eye_centre = 0.5 * (mean[left_eye].mean(axis=0) + mean[right_eye].mean(axis=0))
    frontal = (mean - eye_centre) @ rotation.T
    inter_ocular = np.linalg.norm(frontal[left_eye].mean(axis=0) - frontal[right_eye].mean(axis=0))
    return frontal / inter_ocular


def load_canonical_shape() -> np.ndarray:
    """The stored canonical shape, (478, 3) float64."""
    return np.loadtxt(CANONICAL_SHAPE_PATH, dtype=np.float64)


def _main(directories: list[str]) -> None:
    from PIL import Image
    from mediapipe.python.solutions import face_mesh_connections as connections

    from tasks.reconstruct.landmarks import detect_faces
    from tasks.reconstruct.topology import CHIN_BOTTOM, FOREHEAD_TOP

    left_eye = np.array(sorted({v for e in connections.FACEMESH_LEFT_EYE for v in e}))
    right_eye = np.array(sorted({v for e in connections.FACEMESH_RIGHT_EYE for v in e}))
    meshes = []
    for directory in directories:
        for path in sorted(Path(directory).glob("*.jpg")):
            image = np.asarray(Image.open(path).convert("RGB"))
            faces = detect_faces(image, max_faces=1)
            if faces:
                pixels = faces[0].astype(np.float64)
                meshes.append(np.stack([pixels[:, 0], -pixels[:, 1], -pixels[:, 2]], axis=1))
    shape = mean_face_shape(meshes, left_eye, right_eye, FOREHEAD_TOP, CHIN_BOTTOM)
    header = (f"Canonical MediaPipe face shape: Procrustes mean of {len(meshes)} frontal portraits; "
              "x right, y up, z toward the camera; origin between the eyes, unit inter-ocular distance.")
    np.savetxt(CANONICAL_SHAPE_PATH, shape, fmt="%.5f", header=header)
    print(f"wrote {CANONICAL_SHAPE_PATH} from {len(meshes)} meshes")


if __name__ == "__main__":
    _main(sys.argv[1:])
