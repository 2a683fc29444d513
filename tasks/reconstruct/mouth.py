"""Mouth-interior geometry and its flat-colour texture patches.

An open mouth must never show the background, so a closed cavity ("bag") hangs behind the
inner-lip loop: its front ring duplicates the inner-lip landmarks (so its UVs can point into the
colour band instead of the photo), further rings go back and slightly inward, and a back wall
closes it. The upper half hangs from the upper lip and stays with the skull, the lower half
hangs from the lower lip and follows the jaw. Upper and lower teeth are curved strips just
behind the inner lips, and a tongue lies on the cavity floor.

All colours come from one band of patches under the photo in the rig texture (see rig.py):
a dark cavity gradient (front → back), teeth (centre → sides) and tongue (tip → root).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.face_frame import FaceFrame
from tasks.reconstruct.topology import N_LANDMARKS, face_topology

MOUTH_PARTS = ("cavity_upper", "cavity_lower", "teeth_upper", "teeth_lower", "tongue")
"""Labels of the mouth-interior vertices; lower parts follow the jaw."""

# Share of a patch rectangle's width given to each part, left to right.
_PATCH_SPANS = {"cavity": (0.0, 0.5), "teeth": (0.5, 0.75), "tongue": (0.75, 1.0)}

_CAVITY_RINGS = 3
_TEETH_COLUMNS = 11
_TONGUE_COLUMNS, _TONGUE_ROWS = 5, 4
_TEETH_HALF_WIDTH = 0.42     # of the mouth width, either side of the centre
_TEETH_ARCH_DEPTH = 0.25     # how far back the ends of the dental arch sit, of the mouth width
_CAVITY_RISE = 0.25          # upper-cavity bulge above the lip line, of the mouth width
_CAVITY_DROP = 0.22          # lower-cavity bulge below the lip line, of the mouth width
_CAVITY_NARROWING = 0.15     # inward pull of the back ring, fraction of the lip half-width


@dataclass(frozen=True)
class MouthInterior:
    """Vertices appended after the 478 landmarks, and the triangles that use them."""

    vertices: np.ndarray
    """(M, 3) float32 world coordinates."""

    faces: np.ndarray
    """(F, 3) int32 triangles indexing the full vertex array (landmarks first)."""

    uv_photo: np.ndarray
    """(M, 2) float32 UVs into the colour band of the rig texture."""

    uv_canonical: np.ndarray
    """(M, 2) float32 UVs into the mouth-colour corner of the canonical texture."""

    parts: np.ndarray
    """(M,) part label of each vertex, one of MOUTH_PARTS."""


def patch_uv(part: str, position: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """UVs inside the `part` patch of a patch rectangle (u0, v0, u1, v1).

    `position` in [0, 1] runs along the patch's gradient; UVs keep clear of patch edges so
    neither nearest nor linear texture lookups mix neighbouring patches.
    """
    u0, v0, u1, v1 = rect
    start, end = _PATCH_SPANS[part]
    inner = 0.15 + 0.7 * np.clip(np.asarray(position, np.float64), 0.0, 1.0)
    u = u0 + (u1 - u0) * (start + (end - start) * inner)
    v = np.full_like(u, (v0 + v1) / 2)
    return np.stack([u, v], axis=-1).astype(np.float32)


@dataclass(frozen=True)
class MouthColours:
    """End colours (RGB 0..255) of each patch's gradient."""

    cavity_front: np.ndarray
    cavity_back: np.ndarray
    teeth_centre: np.ndarray
    teeth_side: np.ndarray
    tongue_tip: np.ndarray
    tongue_root: np.ndarray


def mouth_colours(lip_rgb: np.ndarray, face_luma: float) -> MouthColours:
    """Mouth colours tinted by the subject's lips and dimmed for dark photos."""
    lip = np.asarray(lip_rgb, np.float64)
    brightness = float(np.clip(face_luma / 130.0, 0.7, 1.0))
    teeth = np.array([236.0, 228.0, 210.0]) * brightness
    tongue = 0.6 * lip + 0.4 * np.array([190.0, 80.0, 80.0]) * brightness
    return MouthColours(
        cavity_front=0.35 * lip, cavity_back=0.06 * lip,
        teeth_centre=teeth, teeth_side=0.8 * teeth,
        tongue_tip=tongue, tongue_root=0.55 * tongue)


def paint_patches(image: np.ndarray, rect_px: tuple[int, int, int, int], colours: MouthColours) -> None:
    """Paint the three gradient patches into image[y0:y1, x0:x1] (in place)."""
    x0, y0, x1, y1 = rect_px
    width = x1 - x0
    columns = (np.arange(width) + 0.5) / width
    row = np.zeros((width, 3))
    ends = {"cavity": (colours.cavity_front, colours.cavity_back),
            "teeth": (colours.teeth_centre, colours.teeth_side),
            "tongue": (colours.tongue_tip, colours.tongue_root)}
    for part, (start, end) in _PATCH_SPANS.items():
        inside = (columns >= start) & (columns < end) if end < 1.0 else columns >= start
        # Invert patch_uv's inset so the colour under a UV equals the gradient at its position.
        position = np.clip(((columns[inside] - start) / (end - start) - 0.15) / 0.7, 0.0, 1.0)[:, None]
        first, last = ends[part]
        row[inside] = first * (1 - position) + last * position
    image[y0:y1, x0:x1] = np.clip(np.round(row), 0, 255).astype(np.uint8)[None]


def _interp_along_x(points: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Linear interpolation of an arc's (y, z) at the given x (arc sorted by x)."""
    order = np.argsort(points[:, 0])
    xs = points[order, 0]
    return np.stack([np.interp(x, xs, points[order, 1]), np.interp(x, xs, points[order, 2])], axis=1)


def _grid_faces(index: np.ndarray) -> list[tuple[int, int, int]]:
    """Two triangles per cell of a 2D grid of vertex indices."""
    faces = []
    for r in range(index.shape[0] - 1):
        for c in range(index.shape[1] - 1):
            a, b, d, e = index[r, c], index[r, c + 1], index[r + 1, c + 1], index[r + 1, c]
            faces += [(a, b, d), (a, d, e)]
    return faces


def _orient(faces: np.ndarray, vertices: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """Flip triangles so each normal has a positive component along `towards` ((3,) or (F,3))."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    normal = np.cross(b - a, c - a)
    flip = (normal * towards).sum(axis=-1) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def build_mouth_interior(landmarks_world: np.ndarray, frame: FaceFrame, config: ReconstructConfig,
                         band_rect: tuple[float, float, float, float],
                         canonical_rect: tuple[float, float, float, float]) -> MouthInterior:
    """Cavity, teeth and tongue for a (478, 3) world landmark array.

    band_rect / canonical_rect: (u0, v0, u1, v1) of the patch rectangles in the rig texture and
    in the canonical texture.
    """
    topology = face_topology()
    local = frame.to_local(np.asarray(landmarks_world[:N_LANDMARKS], np.float64))
    loop = topology.lips_inner_loop
    n_upper = len(topology.lips_inner_upper)
    width = float(np.clip(frame.mouth_width, 0.6 * frame.inter_ocular, 1.3 * frame.inter_ocular))
    loop_points = local[loop]
    centre = loop_points.mean(axis=0)
    upper_arc, lower_arc = local[topology.lips_inner_upper], local[topology.lips_inner_lower]

    positions: list[np.ndarray] = []
    parts: list[str] = []
    uv_band: list[np.ndarray] = []
    uv_canon: list[np.ndarray] = []

    def add(points, part, patch, gradient):
        start = N_LANDMARKS + sum(len(p) for p in positions)
        positions.append(np.asarray(points, np.float64))
        parts.extend([part] * len(points) if isinstance(part, str) else part)
        uv_band.append(patch_uv(patch, gradient, band_rect))
        uv_canon.append(patch_uv(patch, gradient, canonical_rect))
        return np.arange(start, start + len(points))

    # 1. Cavity rings: ring 0 duplicates the inner-lip loop; ring k sits k/K of the depth back.
    # Loop order: upper arc right→left (corners at 0 and n_upper-1), then lower arc left→right.
    side = np.where(np.arange(len(loop)) < n_upper, 1.0, -1.0)
    side[[0, n_upper - 1]] = 0.0
    loop_parts = np.where(side < 0, "cavity_lower", "cavity_upper")
    half_width = np.maximum(np.abs(loop_points[:, 0] - centre[0]).max(), 1e-9)
    across = np.clip((loop_points[:, 0] - centre[0]) / half_width, -1.0, 1.0)
    bulge = np.sqrt(1.0 - across ** 2)
    depth = config.mouth_depth * width
    rings = []
    for k in range(_CAVITY_RINGS + 1):
        t = k / _CAVITY_RINGS
        ring = loop_points.copy()
        ring[:, 0] = centre[0] + (loop_points[:, 0] - centre[0]) * (1 - _CAVITY_NARROWING * t)
        lift = np.where(side > 0, _CAVITY_RISE, _CAVITY_DROP) * width * np.sin(np.pi / 2 * min(1.0, 1.5 * t))
        ring[:, 1] += side * lift * bulge
        ring[:, 2] -= depth * t
        rings.append(add(ring, list(loop_parts), "cavity", np.full(len(loop), t)))
    cavity_faces = []
    n_loop = len(loop)
    for k in range(_CAVITY_RINGS):
        for i in range(n_loop):
            j = (i + 1) % n_loop
            a, b, c, d = rings[k][i], rings[k][j], rings[k + 1][j], rings[k + 1][i]
            cavity_faces += [(a, b, c), (a, c, d)]
    # Back wall: a strip between the last ring's upper and lower arcs (they share the corners).
    back = rings[-1]
    back_upper = back[:n_upper]
    back_lower = np.concatenate([back[:1], back[n_upper:][::-1], back[n_upper - 1:n_upper]])
    for i in range(n_upper - 1):
        quad = (back_upper[i], back_upper[i + 1], back_lower[i + 1], back_lower[i])
        if quad[0] == quad[3]:
            cavity_faces.append((quad[0], quad[1], quad[2]))
        elif quad[1] == quad[2]:
            cavity_faces.append((quad[0], quad[1], quad[3]))
        else:
            cavity_faces += [(quad[0], quad[1], quad[2]), (quad[0], quad[2], quad[3])]

    # 2. Teeth: curved strips following the inner lips, set back and arched.
    s = np.linspace(-1.0, 1.0, _TEETH_COLUMNS)
    x = centre[0] + s * _TEETH_HALF_WIDTH * width
    arch = _TEETH_ARCH_DEPTH * width * s ** 2
    teeth_gradient = np.abs(s)
    upper_yz = _interp_along_x(upper_arc, x)
    lower_yz = _interp_along_x(lower_arc, x)
    teeth_z_upper = upper_yz[:, 1] - config.teeth_depth * width - arch
    teeth_z_lower = lower_yz[:, 1] - (config.teeth_depth + 0.04) * width - 0.7 * arch
    upper_rows = [(0.16, 0.0), (0.0, 0.0), (-0.075, 0.01)]   # (height above lip line, extra depth)
    lower_rows = [(-0.01, 0.01), (-0.06, 0.0), (-0.18, 0.0)]
    upper_grid = np.stack([add(np.stack([x, upper_yz[:, 0] + dy * width, teeth_z_upper - dz * width], axis=1),
                               "teeth_upper", "teeth", teeth_gradient) for dy, dz in upper_rows])
    lower_grid = np.stack([add(np.stack([x, lower_yz[:, 0] + dy * width, teeth_z_lower - dz * width], axis=1),
                               "teeth_lower", "teeth", teeth_gradient) for dy, dz in lower_rows])
    teeth_faces = _grid_faces(upper_grid) + _grid_faces(lower_grid)

    # 3. Tongue: a low dome on the lower cavity floor, from behind the lower teeth backwards.
    front_z = float(lower_yz[len(x) // 2, 1]) - (config.teeth_depth + 0.12) * width
    floor_y = float(lower_yz[len(x) // 2, 0]) - 0.10 * width
    along = np.linspace(0.0, 1.0, _TONGUE_ROWS)
    tongue_rows = []
    for a in along:
        half = 0.30 * width * (0.75 + 0.25 * np.sin(np.pi / 2 * min(1.0, 2 * a + 0.3)))
        across_t = np.linspace(-1.0, 1.0, _TONGUE_COLUMNS)
        dome = 0.08 * width * (1 - across_t ** 2) * (0.6 + 0.4 * np.sin(np.pi * a))
        points = np.stack([centre[0] + across_t * half, floor_y + dome,
                           np.full_like(across_t, front_z - a * 0.5 * depth)], axis=1)
        tongue_rows.append(add(points, "tongue", "tongue", np.full(len(points), a)))
    tongue_faces = _grid_faces(np.stack(tongue_rows))

    local_all = np.concatenate([local] + positions)
    # Normals: cavity walls face into the cavity, teeth face the camera, the tongue faces up and out.
    cavity_faces = np.array(cavity_faces, np.int32)
    cavity_centre = np.concatenate(positions[:len(rings)]).mean(axis=0)
    tri_centres = local_all[cavity_faces].mean(axis=1)
    cavity_faces = _orient(cavity_faces, local_all, cavity_centre - tri_centres)
    teeth_faces = _orient(np.array(teeth_faces, np.int32), local_all, np.array([0.0, 0.0, 1.0]))
    tongue_faces = _orient(np.array(tongue_faces, np.int32), local_all, np.array([0.0, 1.0, 0.5]))

    return MouthInterior(
        vertices=frame.to_world(np.concatenate(positions)).astype(np.float32),
        faces=np.concatenate([cavity_faces, teeth_faces, tongue_faces]).astype(np.int32),
        uv_photo=np.concatenate(uv_band).astype(np.float32),
        uv_canonical=np.concatenate(uv_canon).astype(np.float32),
        parts=np.array(parts))
