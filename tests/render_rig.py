"""A small face-shaped rig for render tests and benchmarks, built without the reconstruct stage:
a domed elliptical grid patch in the middle of the photo, UV-projected onto a real portrait,
with a few non-zero ARKit deltas (jawOpen, eyeBlinkLeft, mouthSmileLeft)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tasks.common.arkit import ARKIT_NAMES, INDEX

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "samples"
PORTRAIT = SAMPLES / "portraits" / "sfhq_pt1_00000161.jpg"
# patch half-extents in world units (1 unit = the crop width)
PATCH_HALF_WIDTH = 0.22
PATCH_HALF_HEIGHT = 0.3
JAW_DROP = 0.05
MOVING_SHAPES = ("jawOpen", "eyeBlinkLeft", "mouthSmileLeft")


def make_texture(size: int, portrait: Path = PORTRAIT) -> np.ndarray:
    """Portrait resized to size x size on top of a band of size//8 rows of flat mouth colours."""
    photo = np.asarray(Image.open(portrait).convert("RGB").resize((size, size), Image.BILINEAR))
    band = np.zeros((size // 8, size, 3), dtype=np.uint8)
    thirds = np.array_split(np.arange(size), 3)
    for columns, colour in zip(thirds, ((40, 8, 10), (235, 230, 215), (170, 50, 60))):
        band[:, columns] = colour
    return np.concatenate([photo, band], axis=0)


def make_rig(size: int, grid: int = 17) -> dict[str, np.ndarray]:
    """Rig arrays (vertices, faces, uv_photo, uv_canonical, deltas, pivot) for a size^2 crop."""
    band = size // 8
    xs = np.linspace(-PATCH_HALF_WIDTH, PATCH_HALF_WIDTH, grid)
    ys = np.linspace(-PATCH_HALF_HEIGHT, PATCH_HALF_HEIGHT, grid)
    gx, gy = np.meshgrid(xs, ys)
    ex, ey = gx / PATCH_HALF_WIDTH, gy / PATCH_HALF_HEIGHT
    inside = ex**2 + ey**2 <= 1.0 + 1e-9
    index = -np.ones(gx.shape, dtype=np.int64)
    index[inside] = np.arange(inside.sum())
    faces = []
    for r in range(grid - 1):
        for c in range(grid - 1):
            a, b, d, e = index[r, c], index[r, c + 1], index[r + 1, c], index[r + 1, c + 1]
            # rows go up in y, columns right in x: (a, b, e) and (a, e, d) are counter-clockwise
            for tri in ((a, b, e), (a, e, d)):
                if min(tri) >= 0:
                    faces.append(tri)
    x, y = gx[inside], gy[inside]
    z = 0.08 * np.sqrt(np.clip(1.0 - ex[inside] ** 2 - ey[inside] ** 2, 0.0, 1.0))
    vertices = np.stack([x, y, z], axis=1).astype(np.float32)
    px, py = (x + 0.5) * size, (0.5 - y) * size
    uv_photo = np.stack([px / size, 1.0 - py / (size + band)], axis=1).astype(np.float32)
    uv_canonical = np.stack([(ex[inside] + 1) / 2, (ey[inside] + 1) / 2], axis=1).astype(np.float32)
    deltas = np.zeros((len(ARKIT_NAMES), len(vertices), 3), dtype=np.float32)
    lower = np.clip(-y / PATCH_HALF_HEIGHT, 0.0, 1.0)
    deltas[INDEX["jawOpen"], :, 1] = -JAW_DROP * lower
    eye = np.exp(-(((x + 0.09) ** 2 + (y - 0.08) ** 2) / 0.002))
    deltas[INDEX["eyeBlinkLeft"], :, 1] = -0.02 * eye
    mouth = np.exp(-(((x + 0.07) ** 2 + (y + 0.12) ** 2) / 0.003))
    deltas[INDEX["mouthSmileLeft"], :, 0] = -0.02 * mouth
    deltas[INDEX["mouthSmileLeft"], :, 1] = 0.015 * mouth
    return {
        "vertices": vertices,
        "faces": np.asarray(faces, dtype=np.int32),
        "uv_photo": uv_photo,
        "uv_canonical": uv_canonical,
        "deltas": deltas,
        "pivot": np.array([0.0, -0.05, -0.15], dtype=np.float32),
    }


def make_animation(n_frames: int, pose_from: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """weights (T,52) and head_pose (T,6): frame 1 (index 0) is at rest; jawOpen, eyeBlinkLeft and
    mouthSmileLeft move from frame 2; the head turns only from 0-based index `pose_from` on."""
    weights = np.zeros((n_frames, len(ARKIT_NAMES)), dtype=np.float32)
    phase = np.linspace(0.0, 1.0, n_frames)
    weights[1:, INDEX["jawOpen"]] = 0.3 + 0.7 * phase[1:]
    weights[1:, INDEX["eyeBlinkLeft"]] = phase[1:]
    weights[1:, INDEX["mouthSmileLeft"]] = 1.0 - phase[1:]
    head_pose = np.zeros((n_frames, 6), dtype=np.float32)
    if pose_from is not None and pose_from < n_frames:
        turn = np.linspace(0.0, 1.0, n_frames - pose_from)
        head_pose[pose_from:, 0] = 0.05 * turn
        head_pose[pose_from:, 1] = 0.15 * turn
        head_pose[pose_from:, 2] = -0.05 * turn
        head_pose[pose_from:, 3] = 0.01 * turn
    return weights, head_pose
