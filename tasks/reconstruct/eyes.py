"""Eyeballs behind the lids, textured from the photo, and the rotation that gaze gives them.

Each eye hole of the face mesh (the 16-point eye contour) is left open, and an eyeball surface
sits just behind it:
- the front: the eye opening itself (its contour duplicated, plus rows between the lids), with
  photo UVs, so at rest every pixel of the opening samples the photo's own iris, pupil and white;
- the sides: a ring from the contour outward, hidden by the lids at rest, painted with the photo's
  white-of-the-eye colour, which slides into view when the eye turns.

The surface lies on a sphere whose centre is behind the eye, pulled back wherever it would come in
front of the lids, so it never shows through skin. Gaze (the eyeLook shapes) rotates it about that
centre; the iris landmarks turn with it. A blink also pushes it back, so the closed lids always
cover it.

A blink stretches the photo's upper lid, whose lashes and crease shadow would then read as a
half-open eye. So each eye also has a closing lid: a strip folded flat onto the upper lid line at
rest (no area, so the rest frame is untouched) that a blink unfolds over the eye, painted as lid
skin with a lash line at its edge (the band's "lid" patch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.mouth import orient_faces, patch_uv
from tasks.reconstruct.topology import N_LANDMARKS, EyeRegion, face_topology

EYEBALL_PARTS = {"Left": "eye_left", "Right": "eye_right"}
"""Part label of each eye's eyeball vertices, by ARKit side."""

LID_PARTS = {"Left": "lid_left", "Right": "lid_right"}
"""Part label of each eye's closing-lid vertices, by ARKit side."""

EYE_PARTS = (*EYEBALL_PARTS.values(), *LID_PARTS.values())
"""Every part label this module gives."""

LID_ROW_REACH = (0.0, 0.6, 1.0)
"""Rows of a closing lid, from its top edge (row 0) to its moving edge (the last row): how far
each goes from the top edge's blink position to the lids' meeting line."""

LID_ROWS = len(LID_ROW_REACH)

_FRONT_ROWS = 4
"""Rows of the front surface from the upper lid (row 0) to the lower lid (last row)."""

_SIDE_SCALE = (1.8, 3.0)
"""The eyeball's outer ring, as a multiple of the eye contour's offset from its centre (x, y):
wide enough that a full gaze or a wide-open lid never reveals its edge."""


@dataclass(frozen=True)
class Eyeballs:
    """Vertices appended after the mouth interior, and the triangles that use them."""

    vertices: np.ndarray
    """(E, 3) float32 world coordinates."""

    faces: np.ndarray
    """(F, 3) int32 triangles indexing the full vertex array."""

    uv_photo: np.ndarray
    """(E, 2) float32 UVs: the photo under the front, the sclera patch of the band on the sides."""

    uv_canonical: np.ndarray
    """(E, 2) float32 canonical UVs."""

    parts: np.ndarray
    """(E,) one of EYE_PARTS; each closing lid's vertices are LID_ROWS rows of the upper-lid
    columns, row-major."""


def eye_width(points: np.ndarray, eye: EyeRegion) -> float:
    """Corner-to-corner width of an eye, in the units of `points`."""
    return float(np.linalg.norm(points[eye.upper[0], :2] - points[eye.upper[-1], :2]))


def eyeball_centre(landmarks: np.ndarray, eye: EyeRegion, config: ReconstructConfig) -> np.ndarray:
    """(3,) rotation centre of an eyeball: behind the eye contour's centre, as far back as puts the
    sphere of radius `config.eyeball_radius` eye widths behind every contour point (by the recess)."""
    points = np.asarray(landmarks, np.float64)
    width = eye_width(points, eye)
    radius = config.eyeball_radius * width
    loop = points[eye.loop]
    centre_xy = loop[:, :2].mean(axis=0)
    reach = np.sqrt(np.maximum(radius ** 2 - ((loop[:, :2] - centre_xy) ** 2).sum(axis=1), 0.0))
    centre_z = float((loop[:, 2] - config.eyeball_recess * width - reach).min())
    return np.array([centre_xy[0], centre_xy[1], centre_z])


def gaze_angles(weights: dict[str, float], side: str, config: ReconstructConfig) -> tuple[float, float]:
    """(yaw, pitch) in radians of one eyeball for ARKit eyeLook weights.

    yaw > 0 turns the eye's front toward the face frame's +x (the subject's left), pitch > 0 up.
    eyeLookOut{side} turns away from the nose, eyeLookIn{side} toward it.
    """
    outward = 1.0 if side == "Left" else -1.0
    horizontal = weights.get(f"eyeLookOut{side}", 0.0) - weights.get(f"eyeLookIn{side}", 0.0)
    vertical = weights.get(f"eyeLookUp{side}", 0.0) - weights.get(f"eyeLookDown{side}", 0.0)
    return (float(np.radians(config.eye_yaw_degrees) * outward * horizontal),
            float(np.radians(config.eye_pitch_degrees) * vertical))


def rotate_eye(points: np.ndarray, centre: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """Points turned about `centre` by yaw (about y, front toward +x) then pitch (about x, front up)."""
    p = np.asarray(points, np.float64) - centre
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    x = p[:, 0] * cy + p[:, 2] * sy
    z = -p[:, 0] * sy + p[:, 2] * cy
    y = p[:, 1] * cp + z * sp
    z = -p[:, 1] * sp + z * cp
    return np.stack([x, y, z], axis=1) + centre


def _eye_geometry(points: np.ndarray, uv_photo: np.ndarray, uv_canonical: np.ndarray, eye: EyeRegion,
                  config: ReconstructConfig, band_rect, canonical_rect, first: int):
    """One eyeball: (vertices, faces, uv_photo, uv_canonical) with faces indexed from `first`."""
    width = eye_width(points, eye)
    centre = eyeball_centre(points, eye, config)
    radius = config.eyeball_radius * width
    recess = config.eyeball_recess * width

    def sphere_z(xy):
        return centre[2] + np.sqrt(np.maximum(radius ** 2 - ((xy - centre[:2]) ** 2).sum(axis=-1), 0.1 * radius ** 2))

    # 1. Front: rows between the upper and lower lid arcs; the corner columns are single vertices.
    upper, lower = eye.upper, eye.lower
    fractions = np.linspace(0.0, 1.0, _FRONT_ROWS)
    vertices, uv, uv_canon, index = [], [], [], np.zeros((_FRONT_ROWS, len(upper)), np.int64)
    for column in range(len(upper)):
        corner = column in (0, len(upper) - 1)
        for row, f in enumerate(fractions):
            if corner and row > 0:
                index[row, column] = index[0, column]
                continue
            xy = (1 - f) * points[upper[column], :2] + f * points[lower[column], :2]
            lid_z = (1 - f) * points[upper[column], 2] + f * points[lower[column], 2]
            vertices.append([xy[0], xy[1], min(float(sphere_z(xy)), lid_z - recess)])
            uv.append((1 - f) * uv_photo[upper[column]] + f * uv_photo[lower[column]])
            uv_canon.append((1 - f) * uv_canonical[upper[column]] + f * uv_canonical[lower[column]])
            index[row, column] = first + len(vertices) - 1
    faces = []
    for row in range(_FRONT_ROWS - 1):
        for column in range(len(upper) - 1):
            a, b = index[row, column], index[row, column + 1]
            d, e = index[row + 1, column + 1], index[row + 1, column]
            if a == e:
                faces.append((a, b, d))
            elif b == d:
                faces.append((a, b, e))
            else:
                faces += [(a, b, d), (a, d, e)]
    front = np.array(vertices)

    # 2. Sides: the contour again (sclera UVs) and an outer ring, further out and further back.
    loop = points[eye.loop]
    by_landmark = {int(v): front[i] for i, v in enumerate(
        [upper[c] for c in range(len(upper))] + [lower[c] for c in range(1, len(lower) - 1)])}
    contour = np.array([by_landmark[int(v)] for v in eye.loop])
    contour[:, 2] -= recess  # behind the skin at the contour, where a pixel may fall to either side
    outer = contour.copy()
    outer[:, :2] = centre[:2] + (loop[:, :2] - centre[:2]) * np.array(_SIDE_SCALE)
    # Well behind the skin around the eye, which recedes toward the temple and the nose.
    outer[:, 2] = centre[2] - 0.3 * radius
    n = len(loop)
    inner_index = first + len(front) + np.arange(n)
    outer_index = inner_index + n
    for i in range(n):
        j = (i + 1) % n
        faces += [(inner_index[i], inner_index[j], outer_index[j]), (inner_index[i], outer_index[j], outer_index[i])]
    sides = np.concatenate([contour, outer])
    side_s = np.concatenate([np.zeros(n), np.ones(n)])
    uv = np.concatenate([np.array(uv), patch_uv("sclera", side_s, 0.5, band_rect)])
    uv_canon = np.concatenate([np.array(uv_canon), patch_uv("sclera", side_s, 0.5, canonical_rect)])
    all_vertices = np.concatenate([front, sides])
    faces = np.array(faces, np.int64)
    # Every triangle faces the camera (+z).
    padded = np.zeros((first + len(all_vertices), 3))
    padded[first:] = all_vertices
    faces = orient_faces(faces, padded, np.array([0.0, 0.0, 1.0]))
    return all_vertices, faces, uv, uv_canon


def _closing_lid(points: np.ndarray, eye: EyeRegion, band_rect, canonical_rect, first: int):
    """One closing lid at rest: LID_ROWS copies of the upper lid line, a little in front of it,
    painted from the band's lid patch (skin, then the lash line at its moving edge). The photo's
    own skin under the brows is too often in the crease's shadow to read as a closed lid."""
    upper = points[eye.upper]
    width = eye_width(points, eye)
    n = len(upper)
    vertices = np.tile(upper, (LID_ROWS, 1))
    vertices[:, 2] += 0.05 * width  # in front of the stretched photo lid it covers
    s = np.tile(np.linspace(0.0, 1.0, n), LID_ROWS)
    t = np.repeat(np.array(LID_ROW_REACH), n)
    index = first + np.arange(LID_ROWS * n).reshape(LID_ROWS, n)
    faces = []
    for row in range(LID_ROWS - 1):
        for column in range(n - 1):
            a, b = index[row, column], index[row, column + 1]
            d, e = index[row + 1, column + 1], index[row + 1, column]
            faces += [(a, b, d), (a, d, e)]
    return (vertices, np.array(faces, np.int64), patch_uv("lid", s, t, band_rect),
            patch_uv("lid", s, t, canonical_rect))


def build_eyeballs(landmarks_world: np.ndarray, uv_photo: np.ndarray, config: ReconstructConfig,
                   band_rect: tuple[float, float, float, float],
                   canonical_rect: tuple[float, float, float, float], first_index: int) -> Eyeballs:
    """Both eyeballs for a (478, 3) world landmark array.

    uv_photo: (478, 2) photo UVs of the landmarks; band_rect / canonical_rect: the patch rectangles
    (see mouth.PATCH_SPANS); first_index: the vertex index the eyeballs start at.
    """
    topology = face_topology()
    points = np.asarray(landmarks_world[:N_LANDMARKS], np.float64)
    vertices, faces, uvs, uv_canon, parts = [], [], [], [], []
    first = first_index
    for side, eye in (("Left", topology.eye_left), ("Right", topology.eye_right)):
        v, f, uv, uc = _eye_geometry(points, uv_photo, topology.uv_canonical, eye, config, band_rect,
                                     canonical_rect, first)
        lid = _closing_lid(points, eye, band_rect, canonical_rect, first + len(v))
        vertices += [v, lid[0]]
        faces += [f, lid[1]]
        uvs += [uv, lid[2]]
        uv_canon += [uc, lid[3]]
        parts += [EYEBALL_PARTS[side]] * len(v) + [LID_PARTS[side]] * len(lid[0])
        first += len(v) + len(lid[0])
    return Eyeballs(vertices=np.concatenate(vertices).astype(np.float32),
                    faces=np.concatenate(faces).astype(np.int32),
                    uv_photo=np.concatenate(uvs).astype(np.float32),
                    uv_canonical=np.concatenate(uv_canon).astype(np.float32),
                    parts=np.array(parts))
