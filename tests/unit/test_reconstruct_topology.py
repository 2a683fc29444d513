"""Topology and canonical UV layout of the MediaPipe face mesh."""

import numpy as np
from mediapipe.python.solutions import face_mesh_connections as connections

from tasks.reconstruct.rig import CANONICAL_MOUTH_RECT
from tasks.reconstruct.topology import (CHIN_BOTTOM, FOREHEAD_TOP, MOUTH_CORNERS_INNER, N_LANDMARKS,
                                        N_MESH_POINTS, face_topology)


def signed_areas(uv, faces):
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def test_triangles_are_the_852_true_faces_of_the_tessellation():
    topology = face_topology()
    faces = topology.faces
    assert faces.shape == (852, 3) and faces.dtype == np.int32
    assert faces.min() >= 0 and faces.max() < N_MESH_POINTS
    assert len({tuple(sorted(f)) for f in faces}) == 852
    tessellation = {tuple(sorted(e)) for e in connections.FACEMESH_TESSELATION}
    edge_use = {}
    for f in faces:
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            assert tuple(sorted((int(a), int(b)))) in tessellation
            edge_use[tuple(sorted((int(a), int(b))))] = edge_use.get(tuple(sorted((int(a), int(b)))), 0) + 1
    # A manifold surface: every edge borders one (boundary) or two triangles, and all edges are used.
    assert set(edge_use.values()) == {1, 2}
    assert set(edge_use) == tessellation
    boundary = sum(1 for n in edge_use.values() if n == 1)
    assert boundary == 36 + 16 + 16 + 20  # face oval, two eyes, inner lips


def test_triangles_are_counter_clockwise_and_fold_free_in_canonical_uv():
    topology = face_topology()
    uv = topology.uv_canonical
    assert uv.shape == (N_LANDMARKS, 2)
    assert (uv >= 0).all() and (uv <= 1).all()
    assert (signed_areas(uv, topology.faces) > 0).all()
    assert (signed_areas(uv, topology.eye_fill_faces) > 0).all()
    assert topology.eye_fill_faces.shape == (28, 3)


def test_canonical_layout_is_an_upright_face_with_arkit_sides():
    topology = face_topology()
    uv = topology.uv_canonical
    assert uv[FOREHEAD_TOP, 1] > uv[CHIN_BOTTOM, 1] + 0.5
    assert uv[topology.eye_left.loop, 0].mean() > 0.55 > 0.45 > uv[topology.eye_right.loop, 0].mean()
    assert uv[MOUTH_CORNERS_INNER[1], 0] > uv[MOUTH_CORNERS_INNER[0], 0]
    for eye in (topology.eye_left, topology.eye_right):
        low, high = uv[eye.loop].min(axis=0), uv[eye.loop].max(axis=0)
        assert ((uv[eye.iris[0]] > low) & (uv[eye.iris[0]] < high)).all()
        assert uv[eye.brow_upper, 1].mean() > uv[eye.upper, 1].mean()


def test_landmark_groups_are_consistent():
    topology = face_topology()
    loop = topology.lips_inner_loop
    assert len(loop) == 20 and len(set(loop.tolist())) == 20
    assert topology.lips_inner_upper[0] == topology.lips_inner_lower[0] == MOUTH_CORNERS_INNER[0]
    assert topology.lips_inner_upper[-1] == topology.lips_inner_lower[-1] == MOUTH_CORNERS_INNER[1]
    uv = topology.uv_canonical
    assert uv[topology.lips_inner_upper[1:-1], 1].min() > uv[topology.lips_inner_lower[1:-1], 1].max()
    for eye in (topology.eye_left, topology.eye_right):
        assert len(eye.upper) == len(eye.lower) == 9
        assert eye.upper[0] == eye.lower[0] and eye.upper[-1] == eye.lower[-1]
        assert uv[eye.upper[1:-1], 1].mean() > uv[eye.lower[1:-1], 1].mean()
    assert len(topology.face_oval) == 36 and topology.face_oval[0] == FOREHEAD_TOP


def test_canonical_mouth_corner_is_free_of_face_triangles():
    topology = face_topology()
    uv = topology.uv_canonical
    u0, v0, u1, v1 = CANONICAL_MOUTH_RECT
    corners = uv[topology.faces]
    # Every triangle's bounding box lies outside the rectangle.
    overlaps = ((corners[..., 0].min(axis=1) < u1) & (corners[..., 0].max(axis=1) > u0)
                & (corners[..., 1].min(axis=1) < v1) & (corners[..., 1].max(axis=1) > v0))
    assert not overlaps.any()
