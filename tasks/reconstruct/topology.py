"""Triangle topology and canonical UV layout of MediaPipe's 478-point face mesh.

The mediapipe wheel ships the tessellation only as an edge list (FACEMESH_TESSELATION), not the
canonical face model. So the triangles are the 3-cliques of that edge graph. A Tutte (barycentric)
embedding of the graph (face oval pinned to an ellipse, a temporary centre vertex in each eye and
the mouth hole) is planar, so the two 3-cliques that are not faces (they enclose other vertices)
are found and dropped in it.

The canonical UV layout then flattens the canonical face shape (see canonical_shape.py) with
Floater's mean-value weights, the face oval pinned at its frontal projection: a fold-free
layout that looks like a frontal face, with the sides of the face unrolled. Every triangle is
oriented counter-clockwise in it, which is counter-clockwise seen from the camera for a frontal
face.

Everything is computed once per process, lazily, and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tasks.reconstruct.canonical_shape import load_canonical_shape

N_MESH_POINTS = 468
"""Landmarks of the tessellated surface; 468..477 are the iris points."""

N_LANDMARKS = 478
"""Landmarks MediaPipe reports with refine_landmarks=True."""

FOREHEAD_TOP = 10
"""MediaPipe index of the top-centre point of the face oval (mid forehead)."""

CHIN_BOTTOM = 152
"""MediaPipe index of the bottom-centre point of the face oval (chin)."""

NOSE_TIP = 1
"""MediaPipe index of the nose tip."""

MOUTH_CORNERS_INNER = (78, 308)
"""MediaPipe indices of the inner-lip mouth corners: subject's right (image left), then left."""

MOUTH_CORNERS_OUTER = (61, 291)
"""MediaPipe indices of the outer-lip mouth corners: subject's right, then left."""

# Where the face oval is pinned for the topological (Tutte) embedding.
_OVAL_CENTRE = (0.5, 0.5)
_OVAL_RADII = (0.42, 0.47)

_UV_MARGIN = 0.03
"""Gap between the face's canonical UV bounding box and the edge of the unit square."""


def _ordered_loop(edges) -> list[int]:
    """Vertex order of a single closed cycle given as an unordered edge set."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    if any(len(n) != 2 for n in neighbours.values()):
        raise ValueError("edge set is not a single cycle")
    start = min(neighbours)
    loop, previous = [start], None
    current = start
    while True:
        a, b = neighbours[current]
        following = a if a != previous else b
        if following == start:
            break
        loop.append(following)
        previous, current = current, following
    if len(loop) != len(neighbours):
        raise ValueError("edge set holds more than one cycle")
    return loop


def _edge_components(edges) -> list[set[tuple[int, int]]]:
    """Split an edge set into its connected components."""
    remaining = {tuple(e) for e in edges}
    components = []
    while remaining:
        component = {next(iter(remaining))}
        grew = True
        while grew:
            grew = False
            vertices = {v for e in component for v in e}
            for edge in list(remaining - component):
                if edge[0] in vertices or edge[1] in vertices:
                    component.add(edge)
                    grew = True
        remaining -= component
        components.append(component)
    return components


def _split_cycles(edges) -> list[list[int]]:
    """Split an edge set made of disjoint cycles into ordered loops."""
    return [_ordered_loop(component) for component in _edge_components(edges)]


def _chain(edges) -> list[int]:
    """Vertex order of an open path given as an unordered edge set."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    ends = sorted(v for v, n in neighbours.items() if len(n) == 1)
    path, previous = [ends[0]], None
    while len(path) < len(neighbours):
        following = [n for n in neighbours[path[-1]] if n != previous][0]
        previous = path[-1]
        path.append(following)
    return path


@dataclass(frozen=True)
class EyeRegion:
    """Index groups of one eye, oriented with the canonical layout."""

    loop: np.ndarray
    """The 16 eye-contour landmarks (the hole's boundary), in loop order."""

    upper: np.ndarray
    """Upper-lid contour from the inner corner to the outer corner, corners included."""

    lower: np.ndarray
    """Lower-lid contour from the inner corner to the outer corner, corners included."""

    iris: np.ndarray
    """Iris centre followed by its four contour points."""

    brow_upper: np.ndarray
    """Upper line of the eyebrow, from the inner end to the outer end."""

    brow_lower: np.ndarray
    """Lower line of the eyebrow, from the inner end to the outer end."""


@dataclass(frozen=True)
class FaceTopology:
    """Triangles, canonical UVs and named landmark groups of the MediaPipe face mesh."""

    faces: np.ndarray
    """(852, 3) int32 surface triangles over landmarks 0..467, counter-clockwise from the front."""

    eye_fill_faces: np.ndarray
    """(28, 3) int32 triangles closing both eye holes (strips between upper and lower lid)."""

    uv_canonical: np.ndarray
    """(478, 2) float32 canonical UV of every landmark, in [0, 1], v up; iris points included."""

    face_oval: np.ndarray
    """The 36 face-oval landmarks in loop order, starting at the forehead top."""

    lips_inner_upper: np.ndarray
    """Inner edge of the upper lip from the right mouth corner (image left) to the left one."""

    lips_inner_lower: np.ndarray
    """Inner edge of the lower lip from the right mouth corner to the left one (same corners)."""

    lips_outer_upper: np.ndarray
    """Outer edge (vermilion border) of the upper lip, right corner to left corner."""

    lips_outer_lower: np.ndarray
    """Outer edge of the lower lip, right corner to left corner."""

    eye_left: EyeRegion
    """The subject's left eye (ARKit "Left"; image right, larger x)."""

    eye_right: EyeRegion
    """The subject's right eye (image left, smaller x)."""

    @property
    def lips_inner_loop(self) -> np.ndarray:
        """Closed inner-lip loop: upper edge right→left, then lower edge left→right (corners once)."""
        return np.concatenate([self.lips_inner_upper, self.lips_inner_lower[-2:0:-1]])


def _tutte_layout(n_vertices, edges, boundary, hole_loops) -> np.ndarray:
    """Barycentric embedding with the boundary on an ellipse and a virtual centre in each hole."""
    import scipy.sparse.linalg

    all_edges = [tuple(e) for e in edges]
    n_total = n_vertices + len(hole_loops)
    for hole, loop in enumerate(hole_loops):
        all_edges += [(n_vertices + hole, v) for v in loop]
    rows, cols = zip(*all_edges)
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(2 * len(all_edges)), (rows + cols, cols + rows)), shape=(n_total, n_total)).tocsr()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    laplacian = scipy.sparse.diags(degree) - adjacency

    angles = np.pi / 2 - 2 * np.pi * np.arange(len(boundary)) / len(boundary)
    pinned = np.stack([_OVAL_CENTRE[0] + _OVAL_RADII[0] * np.cos(angles),
                       _OVAL_CENTRE[1] + _OVAL_RADII[1] * np.sin(angles)], axis=1)
    is_free = np.ones(n_total, bool)
    is_free[boundary] = False
    free = np.flatnonzero(is_free)
    positions = np.zeros((n_total, 2))
    positions[boundary] = pinned
    system = laplacian[free][:, free].tocsc()
    rhs = -laplacian[free][:, boundary] @ pinned
    solve = scipy.sparse.linalg.factorized(system)
    positions[free] = np.stack([solve(rhs[:, 0]), solve(rhs[:, 1])], axis=1)
    return positions


def _mean_value_layout(shape, triangles, boundary) -> np.ndarray:
    """Floater's mean-value parameterization of a 3D triangle mesh with a pinned boundary.

    The boundary keeps the (x, y) of `shape`; the weights are positive, so with a convex
    boundary every triangle keeps its orientation.
    """
    import scipy.sparse.linalg

    n_vertices = len(shape)
    rows, cols, weights = [], [], []
    for corner in range(3):
        i = triangles[:, corner]
        j = triangles[:, (corner + 1) % 3]
        k = triangles[:, (corner + 2) % 3]
        e_ij, e_ik = shape[j] - shape[i], shape[k] - shape[i]
        len_ij, len_ik = np.linalg.norm(e_ij, axis=1), np.linalg.norm(e_ik, axis=1)
        cos_angle = np.clip((e_ij * e_ik).sum(axis=1) / (len_ij * len_ik), -1.0, 1.0)
        half_tan = np.tan(np.arccos(cos_angle) / 2)
        # The angle at i in this triangle borders both edges i-j and i-k.
        rows += [i, i]
        cols += [j, k]
        weights += [half_tan / len_ij, half_tan / len_ik]
    rows, cols, weights = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
    weight_matrix = scipy.sparse.coo_matrix((weights, (rows, cols)), shape=(n_vertices, n_vertices)).tocsr()
    laplacian = scipy.sparse.diags(np.asarray(weight_matrix.sum(axis=1)).ravel()) - weight_matrix
    is_free = np.ones(n_vertices, bool)
    is_free[boundary] = False
    free = np.flatnonzero(is_free)
    positions = shape[:, :2].copy()
    solve = scipy.sparse.linalg.factorized(laplacian[free][:, free].tocsc())
    rhs = -laplacian[free][:, boundary] @ positions[boundary]
    positions[free] = np.stack([solve(rhs[:, 0]), solve(rhs[:, 1])], axis=1)
    return positions


def _points_in_triangle(points, a, b, c, eps=1e-12) -> np.ndarray:
    """Mask of points strictly inside triangle abc (either orientation)."""
    def cross(p, q, r):
        return (q[0] - p[0]) * (r[..., 1] - p[1]) - (q[1] - p[1]) * (r[..., 0] - p[0])
    d1, d2, d3 = cross(a, b, points), cross(b, c, points), cross(c, a, points)
    return ((d1 > eps) & (d2 > eps) & (d3 > eps)) | ((d1 < -eps) & (d2 < -eps) & (d3 < -eps))


def _signed_area(uv, triangles) -> np.ndarray:
    a, b, c = uv[triangles[:, 0]], uv[triangles[:, 1]], uv[triangles[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _arcs_between_corners(loop, uv, inner_side_u, corners=None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Split a closed loop at two corners (default: its min-u and max-u points) into (upper, lower).

    Both arcs run from the corner nearer `inner_side_u` to the other corner, corners included.
    """
    loop = list(loop)
    u = uv[loop, 0]
    if corners is None:
        i_min, i_max = int(np.argmin(u)), int(np.argmax(u))
    else:
        i_min, i_max = loop.index(corners[0]), loop.index(corners[1])
    if abs(u[i_min] - inner_side_u) <= abs(u[i_max] - inner_side_u):
        i_start, i_end = i_min, i_max
    else:
        i_start, i_end = i_max, i_min
    n = len(loop)
    forward = [loop[(i_start + k) % n] for k in range((i_end - i_start) % n + 1)]
    backward = [loop[(i_start - k) % n] for k in range((i_start - i_end) % n + 1)]
    if uv[forward[1:-1], 1].mean() > uv[backward[1:-1], 1].mean():
        return np.array(forward), np.array(backward), loop[i_start], loop[i_end]
    return np.array(backward), np.array(forward), loop[i_start], loop[i_end]


def _strip_triangles(upper, lower) -> list[tuple[int, int, int]]:
    """Triangles between two arcs sharing both end points (equal lengths)."""
    triangles = []
    for k in range(len(upper) - 1):
        quad = (upper[k], upper[k + 1], lower[k + 1], lower[k])
        if quad[0] == quad[3]:
            triangles.append((quad[0], quad[1], quad[2]))
        elif quad[1] == quad[2]:
            triangles.append((quad[0], quad[1], quad[3]))
        else:
            triangles += [(quad[0], quad[1], quad[2]), (quad[0], quad[2], quad[3])]
    return triangles


def _orient_ccw(triangles: np.ndarray, uv: np.ndarray) -> np.ndarray:
    flipped = _signed_area(uv, triangles) < 0
    triangles = triangles.copy()
    triangles[flipped] = triangles[flipped][:, [0, 2, 1]]
    return triangles


def _eye_region(eye_edges, iris_edges, brow_edges, uv, face_centre_u) -> EyeRegion:
    loop = _ordered_loop(eye_edges)
    upper, lower, _, _ = _arcs_between_corners(loop, uv, face_centre_u)
    iris_loop = _ordered_loop(iris_edges)
    iris_centre = min(iris_loop) - 1  # MediaPipe stores each iris centre just before its contour
    brow_lines = _split_cycles_or_chains(brow_edges)
    brow_lines = [line if abs(uv[line[0], 0] - face_centre_u) < abs(uv[line[-1], 0] - face_centre_u)
                  else line[::-1] for line in brow_lines]
    brow_lines.sort(key=lambda line: -uv[line, 1].mean())
    return EyeRegion(loop=np.array(loop), upper=upper, lower=lower,
                     iris=np.array([iris_centre] + iris_loop),
                     brow_upper=np.array(brow_lines[0]), brow_lower=np.array(brow_lines[1]))


def _split_cycles_or_chains(edges) -> list[list[int]]:
    """Split an edge set made of disjoint open paths into ordered paths."""
    return [_chain(component) for component in _edge_components(edges)]


@lru_cache(maxsize=1)
def face_topology() -> FaceTopology:
    """The MediaPipe face mesh's triangles, canonical UVs and landmark groups (cached)."""
    # imported here: mediapipe's solutions package pulls in matplotlib, seconds a process need not pay at import
    from mediapipe.python.solutions import face_mesh_connections as connections

    edges = sorted({tuple(sorted(e)) for e in connections.FACEMESH_TESSELATION})
    neighbours: dict[int, set[int]] = {v: set() for v in range(N_MESH_POINTS)}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]})

    oval = _ordered_loop(connections.FACEMESH_FACE_OVAL)
    start = oval.index(FOREHEAD_TOP)
    oval = oval[start:] + oval[:start]
    lip_loops = _split_cycles(connections.FACEMESH_LIPS)
    eye_loops = [_ordered_loop(connections.FACEMESH_LEFT_EYE), _ordered_loop(connections.FACEMESH_RIGHT_EYE)]

    # The mouth hole is the lip loop whose edges each border a single triangle.
    edge_use: dict[tuple[int, int], int] = {}
    for tri in cliques:
        for e in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[0], tri[2])):
            edge_use[e] = edge_use.get(e, 0) + 1

    def is_hole(loop):
        return all(edge_use.get(tuple(sorted((loop[i], loop[i - 1]))), 0) == 1 for i in range(len(loop)))
    inner_lip_loop = next(loop for loop in lip_loops if is_hole(loop))
    outer_lip_loop = next(loop for loop in lip_loops if loop is not inner_lip_loop)

    holes = [inner_lip_loop] + eye_loops
    layout = _tutte_layout(N_MESH_POINTS, edges, oval, holes)

    # A 3-clique is a face unless it encloses another vertex (or a hole's centre) in the embedding.
    true_faces = []
    for tri in cliques:
        a, b, c = layout[list(tri)]
        others = np.delete(layout, list(tri), axis=0)
        if not _points_in_triangle(others, a, b, c).any():
            true_faces.append(tri)
    true_faces = np.array(true_faces, dtype=np.int32)

    # Flatten the canonical shape; the holes get fans to their centroids so they stay open and round.
    shape = load_canonical_shape()
    augmented_shape = np.concatenate([shape[:N_MESH_POINTS]] + [shape[loop].mean(axis=0, keepdims=True)
                                                                for loop in holes])
    fans = [np.stack([np.full(len(loop), N_MESH_POINTS + h), loop, np.roll(loop, -1)], axis=1)
            for h, loop in enumerate(holes)]
    flat = _mean_value_layout(augmented_shape, np.concatenate([true_faces] + fans), np.array(oval))
    low, high = flat[:N_MESH_POINTS].min(axis=0), flat[:N_MESH_POINTS].max(axis=0)
    scale = (1 - 2 * _UV_MARGIN) / (high - low).max()
    layout = (flat - (low + high) / 2) * scale + 0.5
    faces = _orient_ccw(true_faces, layout)

    uv = np.zeros((N_LANDMARKS, 2))
    uv[:N_MESH_POINTS] = layout[:N_MESH_POINTS]
    centre_u = 0.5
    eye_left = _eye_region(connections.FACEMESH_LEFT_EYE, connections.FACEMESH_LEFT_IRIS,
                           connections.FACEMESH_LEFT_EYEBROW, uv, centre_u)
    eye_right = _eye_region(connections.FACEMESH_RIGHT_EYE, connections.FACEMESH_RIGHT_IRIS,
                            connections.FACEMESH_RIGHT_EYEBROW, uv, centre_u)
    for eye in (eye_left, eye_right):
        # Iris points: the canonical shape's (x, y), mapped by the eye contour's best affine fit.
        design = np.concatenate([shape[eye.loop, :2], np.ones((len(eye.loop), 1))], axis=1)
        affine, *_ = np.linalg.lstsq(design, uv[eye.loop], rcond=None)
        uv[eye.iris] = np.concatenate([shape[eye.iris, :2], np.ones((len(eye.iris), 1))], axis=1) @ affine

    eye_fill = np.array(_strip_triangles(eye_left.upper, eye_left.lower)
                        + _strip_triangles(eye_right.upper, eye_right.lower), dtype=np.int32)
    eye_fill = _orient_ccw(eye_fill, uv)

    # The Tutte layout rounds the mouth hole, so its extreme points are not the mouth corners.
    inner_upper, inner_lower, _, _ = _arcs_between_corners(inner_lip_loop, uv, 0.0, MOUTH_CORNERS_INNER)
    outer_upper, outer_lower, _, _ = _arcs_between_corners(outer_lip_loop, uv, 0.0, MOUTH_CORNERS_OUTER)
    return FaceTopology(
        faces=faces, eye_fill_faces=eye_fill, uv_canonical=uv.astype(np.float32),
        face_oval=np.array(oval), lips_inner_upper=inner_upper, lips_inner_lower=inner_lower,
        lips_outer_upper=outer_upper, lips_outer_lower=outer_lower,
        eye_left=eye_left, eye_right=eye_right)
