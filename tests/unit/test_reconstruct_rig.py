"""Rig assembly, blendshapes, mouth interior, crop and unwrap on synthetic landmarks.

The landmarks are the canonical face shape placed in a small crop, so no detector runs here.
"""

import dataclasses

import numpy as np
import pytest

from tasks.common.arkit import ARKIT_NAMES, INDEX
from tasks.reconstruct.canonical_shape import load_canonical_shape
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.crop import crop_and_resize, square_crop_box
from tasks.reconstruct.eyes import EYE_PARTS
from tasks.reconstruct.mouth import MOUTH_PARTS
from tasks.reconstruct.rig import CANONICAL_MOUTH_RECT, build_face_rig
from tasks.reconstruct.topology import CHIN_BOTTOM, FOREHEAD_TOP, N_LANDMARKS, face_topology
from tasks.reconstruct.unwrap import unwrap_to_canonical

SIZE = 128


def synthetic_landmarks(scale=24.0, angle_degrees=0.0, size=SIZE):
    """Canonical shape (unit inter-ocular distance) in crop pixels, optionally rolled in-plane."""
    shape = load_canonical_shape()
    angle = np.radians(angle_degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    xy = shape[:, :2] @ rotation.T
    centre_y = shape[:, 1].mean()
    return np.stack([size / 2 + scale * xy[:, 0], size / 2 - scale * (xy[:, 1] - centre_y),
                     -scale * shape[:, 2]], axis=1).astype(np.float32)


def crop_image(size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(60, 200, size=(size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def rig():
    return build_face_rig(crop_image(), synthetic_landmarks(), ReconstructConfig())


def signed_areas_xy(points, faces):
    a, b, c = points[faces[:, 0]], points[faces[:, 1]], points[faces[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def test_rig_arrays_follow_the_world_convention(rig):
    landmarks = synthetic_landmarks()
    band = SIZE // 8
    n_vertices = len(rig.vertices)
    assert n_vertices > N_LANDMARKS
    assert rig.faces.min() >= 0 and rig.faces.max() < n_vertices
    assert rig.uv_photo.shape == rig.uv_canonical.shape == (n_vertices, 2)
    assert rig.parts.shape == (n_vertices,)
    assert rig.texture.shape == (SIZE + band, SIZE, 3)
    # The photo rows are the crop; an open mouth's inside (the canonical shape's lips part a little)
    # is painted over in the lips' shade, since the rig rests with its lips closed.
    differs = np.any(rig.texture[:SIZE] != crop_image(), axis=2)
    rows, cols = np.nonzero(differs)
    lips = landmarks[face_topology().lips_inner_loop, :2]
    assert differs.sum() > 0 and np.abs(rig.rest_offset).max() > 0
    assert cols.min() >= lips[:, 0].min() - 1 and cols.max() <= lips[:, 0].max() + 1
    assert rows.min() >= lips[:, 1].min() - 3 and rows.max() <= lips[:, 1].max() + 3
    expected = np.stack([(landmarks[:, 0] - SIZE / 2) / SIZE, (SIZE / 2 - landmarks[:, 1]) / SIZE,
                         -landmarks[:, 2] / SIZE], axis=1)
    # At rest the landmarks sit where the photo has them, plus the lip closing of an open mouth.
    np.testing.assert_allclose(rig.vertices[:N_LANDMARKS], expected + rig.rest_offset, atol=1e-6)
    np.testing.assert_allclose(rig.uv_photo[:N_LANDMARKS, 0], landmarks[:, 0] / SIZE, atol=1e-6)
    np.testing.assert_allclose(rig.uv_photo[:N_LANDMARKS, 1], 1 - landmarks[:, 1] / (SIZE + band), atol=1e-6)
    assert rig.canonical_texture.shape == (256, 256, 3) and rig.canonical_texture.dtype == np.uint8
    assert rig.pivot.shape == (3,) and rig.pivot[2] < rig.vertices[:N_LANDMARKS, 2].min()


def test_face_surface_is_counter_clockwise_from_the_camera(rig):
    n_surface = len(face_topology().faces)
    areas = signed_areas_xy(rig.vertices, rig.faces[:n_surface])
    # Only triangles seen edge-on (the nose wings' undersides) may fold over in a frontal view.
    assert (areas <= 0).sum() <= 4
    assert areas[areas <= 0].sum() > -0.002 * areas[areas > 0].sum()


def test_mouth_interior_parts_and_uvs(rig):
    band = SIZE // 8
    mouth = np.flatnonzero(np.isin(rig.parts, MOUTH_PARTS))
    assert set(rig.parts[N_LANDMARKS:]) == set(MOUTH_PARTS) | set(EYE_PARTS)
    # Mouth UVs point into the colour band, never into the photo rows.
    assert (rig.uv_photo[mouth, 1] < band / (SIZE + band)).all()
    u0, v0, u1, v1 = CANONICAL_MOUTH_RECT
    assert ((rig.uv_canonical[mouth] > [u0, v0]) & (rig.uv_canonical[mouth] < [u1, v1])).all()
    # No triangle mixes photo UVs with band UVs (that would smear the photo across the mouth).
    in_band = np.zeros(len(rig.vertices), bool)
    in_band[mouth] = True
    assert (in_band[rig.faces].all(axis=1) | ~in_band[rig.faces].any(axis=1)).all()
    # The band holds a dim cavity colour that is not black, and bright teeth.
    band_rows = rig.texture[SIZE:]
    luma = band_rows.mean(axis=2)
    assert 25 < luma.min() < 80 and luma.max() > 150


def test_blendshape_array_shape_and_required_real_shapes(rig):
    assert rig.deltas.shape == (len(ARKIT_NAMES), len(rig.vertices), 3)
    assert rig.deltas.dtype == np.float32 and np.isfinite(rig.deltas).all()
    required = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
                "mouthFrownLeft", "mouthFrownRight", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower",
                "mouthRollUpper", "eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight", "browInnerUp",
                "browDownLeft", "browDownRight", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
                "eyeLookInLeft", "jawLeft", "noseSneerLeft", "tongueOut"]
    inter_ocular_world = 24.0 / SIZE
    for name in required:
        assert np.abs(rig.deltas[INDEX[name]]).max() > 0.02 * inter_ocular_world, name


def test_jaw_open_drops_the_chin_and_keeps_the_forehead(rig):
    jaw = rig.deltas[INDEX["jawOpen"]]
    face_height = np.linalg.norm(rig.vertices[FOREHEAD_TOP] - rig.vertices[CHIN_BOTTOM])
    chin_drop = -jaw[CHIN_BOTTOM, 1]
    assert 0.06 * face_height < chin_drop < 0.3 * face_height
    assert np.abs(jaw[FOREHEAD_TOP]).max() < 1e-6
    topology = face_topology()
    assert np.abs(jaw[topology.eye_left.loop]).max() < 1e-6
    # The lips part: the lower lip drops, the upper lip stays.
    assert -jaw[topology.lips_inner_lower[1:-1], 1].min() > 0.5 * chin_drop
    assert np.abs(jaw[topology.lips_inner_upper[1:-1]]).max() < 1e-6
    # Lower teeth and tongue follow the jaw, upper teeth stay with the skull.
    assert (jaw[rig.parts == "teeth_lower", 1] < 0).all() and (jaw[rig.parts == "tongue", 1] < 0).all()
    assert np.abs(jaw[rig.parts == "teeth_upper"]).max() < 1e-7


def test_mouth_close_brings_the_lips_together_against_an_open_jaw(rig):
    topology = face_topology()
    upper, lower = topology.lips_inner_upper[1:-1], topology.lips_inner_lower[1:-1]

    def lip_gap(weights):
        shaped = rig.vertices + sum(w * rig.deltas[INDEX[n]] for n, w in weights.items())
        return (shaped[upper, 1] - shaped[lower, 1]).mean()
    opened = lip_gap({"jawOpen": 1.0})
    assert opened > 3 * lip_gap({})
    assert abs(lip_gap({"jawOpen": 1.0, "mouthClose": 1.0})) < 0.15 * opened


def test_blink_closes_the_eye_gap(rig):
    topology = face_topology()
    for side, eye in (("Left", topology.eye_left), ("Right", topology.eye_right)):
        upper, lower = eye.upper[1:-1], eye.lower[1:-1]
        before = (rig.vertices[upper, 1] - rig.vertices[lower, 1]).mean()
        shaped = rig.vertices + rig.deltas[INDEX[f"eyeBlink{side}"]]
        after = np.abs(shaped[upper, 1] - shaped[lower, 1]).mean()
        assert before > 0 and after < 0.1 * before
        other = topology.eye_right if side == "Left" else topology.eye_left
        assert np.abs(rig.deltas[INDEX[f"eyeBlink{side}"]][other.upper]).max() < 0.01 * before


def test_left_shapes_act_on_the_subjects_left_which_is_image_right(rig):
    topology = face_topology()
    smile = rig.deltas[INDEX["mouthSmileLeft"]]
    right_corner, left_corner = 78, 308
    assert rig.vertices[left_corner, 0] > rig.vertices[right_corner, 0]
    assert smile[left_corner, 1] > 0 and smile[left_corner, 0] > 0
    assert np.linalg.norm(smile[left_corner]) > 20 * np.linalg.norm(smile[right_corner])
    blink = rig.deltas[INDEX["eyeBlinkLeft"]]
    assert np.abs(blink[topology.eye_left.upper]).max() > 0
    assert rig.vertices[topology.eye_left.loop, 0].mean() > 0
    look_in = rig.deltas[INDEX["eyeLookInLeft"]]
    assert (look_in[topology.eye_left.iris, 0] < 0).all()  # toward the nose


def test_deltas_scale_with_face_size_and_follow_head_roll():
    config = ReconstructConfig()
    small = build_face_rig(crop_image(), synthetic_landmarks(scale=16.0), config)
    large = build_face_rig(crop_image(), synthetic_landmarks(scale=32.0), config)
    for name in ("jawOpen", "eyeBlinkLeft", "mouthSmileRight", "browInnerUp"):
        ratio = np.abs(large.deltas[INDEX[name]][:N_LANDMARKS]).max() / np.abs(small.deltas[INDEX[name]][:N_LANDMARKS]).max()
        assert ratio == pytest.approx(2.0, rel=0.02), name
    rolled = build_face_rig(crop_image(), synthetic_landmarks(scale=16.0, angle_degrees=30.0), config)
    chin_small = small.deltas[INDEX["jawOpen"]][CHIN_BOTTOM, :2]
    chin_rolled = rolled.deltas[INDEX["jawOpen"]][CHIN_BOTTOM, :2]
    angle = np.radians(30.0)
    expected = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ chin_small
    np.testing.assert_allclose(chin_rolled, expected, atol=0.02 * np.linalg.norm(chin_small))


def points_in_triangles(points, triangles):
    """Mask of 2D points covered by any of the (T, 3, 2) triangles."""
    a, b, c = (triangles[None, :, i] for i in range(3))
    p = points[:, None]

    def cross(o, q, r):
        return (q[..., 0] - o[..., 0]) * (r[..., 1] - o[..., 1]) - (q[..., 1] - o[..., 1]) * (r[..., 0] - o[..., 0])
    d1, d2, d3 = cross(a, b, p), cross(b, c, p), cross(c, a, p)
    inside = ((d1 >= 0) & (d2 >= 0) & (d3 >= 0)) | ((d1 <= 0) & (d2 <= 0) & (d3 <= 0))
    return inside.any(axis=1)


def assert_mouth_hole_is_closed(rig, weights):
    """Seen from the camera, every point inside the inner-lip loop lands on a cavity, teeth or tongue triangle."""
    shaped = rig.vertices + sum(w * rig.deltas[INDEX[n]] for n, w in weights.items())
    loop = face_topology().lips_inner_loop
    polygon = shaped[loop, :2]
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    grid = np.stack(np.meshgrid(np.linspace(low[0], high[0], 60), np.linspace(low[1], high[1], 30)), -1).reshape(-1, 2)
    inside_lips = points_in_triangles(grid, np.stack([np.broadcast_to(polygon.mean(axis=0), polygon.shape),
                                                      polygon, np.roll(polygon, -1, axis=0)], axis=1))
    mouth_faces = rig.faces[(rig.faces >= N_LANDMARKS).any(axis=1)]
    covered = points_in_triangles(grid[inside_lips], shaped[mouth_faces][..., :2])
    assert inside_lips.sum() > 50
    assert covered.all()


@pytest.mark.parametrize("weights", [{"jawOpen": 1.0}, {"jawOpen": 0.5, "mouthFunnel": 1.0},
                                     {"jawOpen": 0.6, "mouthSmileLeft": 1.0, "mouthSmileRight": 1.0},
                                     {"jawOpen": 0.7, "jawLeft": 1.0}])
def test_mouth_interior_closes_the_open_mouth(rig, weights):
    assert_mouth_hole_is_closed(rig, weights)


def test_unwrap_maps_photo_points_to_their_canonical_uv():
    topology = face_topology()
    landmarks = synthetic_landmarks()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    image = np.stack([xx * 2, yy * 2, np.full_like(xx, 77)], axis=-1).astype(np.uint8)
    size = 64
    canonical = unwrap_to_canonical(image, landmarks, topology.faces, topology.uv_canonical, size)
    assert canonical.shape == (size, size, 3) and canonical.dtype == np.uint8
    assert (canonical[..., 2] == 77).all()
    for index in (1, 152, 33, 263, 61):
        u, v = topology.uv_canonical[index]
        row, col = int((1 - v) * size), int(u * size)
        np.testing.assert_allclose(canonical[row, col, :2], 2 * landmarks[index, :2], atol=2 * 3.5)


def test_square_crop_box_stays_inside_the_image_and_shrinks():
    landmarks = np.array([[100.0, 80.0, 0.0], [160.0, 170.0, 0.0]])
    x0, y0, side = square_crop_box(landmarks, (400, 300), 2.0)
    assert side == 180
    assert 0 <= x0 and x0 + side <= 300 and 0 <= y0 and y0 + side <= 400
    assert abs(x0 + side / 2 - 130) <= 1 and abs(y0 + side / 2 - 125) <= 1
    x0, y0, side = square_crop_box(landmarks, (200, 150), 3.0)
    assert side == 150 and x0 == 0 and 0 <= y0 <= 50
    near_edge = np.array([[5.0, 5.0, 0.0], [40.0, 40.0, 0.0]])
    x0, y0, side = square_crop_box(near_edge, (400, 300), 2.0)
    assert (x0, y0) == (0, 0) and side == 70


def test_crop_and_resize_gives_the_requested_square():
    image = crop_image(size=90)
    resized = crop_and_resize(image, (10, 20, 60), 32)
    assert resized.shape == (32, 32, 3) and resized.dtype == np.uint8
    np.testing.assert_array_equal(crop_and_resize(image, (10, 20, 60), 60), image[20:80, 10:70])
    with pytest.raises(ValueError):
        crop_and_resize(image, (50, 50, 60), 32)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        ReconstructConfig(crop_scale=0.5)
    with pytest.raises(ValueError):
        ReconstructConfig(teeth_depth=0.9, mouth_depth=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ReconstructConfig().max_faces = 2
