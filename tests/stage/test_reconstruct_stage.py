"""Reconstruction on real portraits from ../shared/samples (MediaPipe runs here)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.common.arkit import INDEX
from tasks.common.errors import AvatarInputError
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.landmarks import detect_faces
from tasks.reconstruct.rig import reconstruct
from tasks.reconstruct.topology import CHIN_BOTTOM, FOREHEAD_TOP, N_LANDMARKS, face_topology

PORTRAITS = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples" / "portraits"
RESOLUTION = 256


def load(name):
    path = PORTRAITS / name
    if not path.exists():
        pytest.skip(f"sample {path} is not available")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def portrait_rig():
    image = load("sfhq_pt1_00000161.jpg")
    return image, reconstruct(image, RESOLUTION, ReconstructConfig())


def test_portrait_builds_a_complete_rig(portrait_rig):
    image, rig = portrait_rig
    n_vertices = len(rig.vertices)
    assert n_vertices > N_LANDMARKS
    assert rig.faces.min() >= 0 and rig.faces.max() < n_vertices
    assert rig.deltas.shape == (52, n_vertices, 3)
    assert rig.texture.shape == (RESOLUTION + RESOLUTION // 8, RESOLUTION, 3)
    assert rig.n_faces_found == 1
    # The face fills a sensible part of the crop, centred.
    landmarks = rig.landmarks_px
    extent = landmarks[:, :2].max(axis=0) - landmarks[:, :2].min(axis=0)
    assert 0.3 * RESOLUTION < extent.max() < 0.8 * RESOLUTION
    assert np.abs(landmarks[:, :2].mean(axis=0) - RESOLUTION / 2).max() < 0.15 * RESOLUTION
    # The crop is a square of the portrait, and the texture's photo rows are that crop.
    x0, y0, side = rig.crop_box
    assert 0 <= x0 and 0 <= y0 and x0 + side <= image.shape[1] and y0 + side <= image.shape[0]
    original = np.asarray(Image.fromarray(image[y0:y0 + side, x0:x0 + side]).resize((RESOLUTION, RESOLUTION),
                                                                                   Image.LANCZOS))
    np.testing.assert_array_equal(rig.texture[:RESOLUTION], original)


def test_real_face_surface_faces_the_camera(portrait_rig):
    _, rig = portrait_rig
    faces = face_topology().faces
    points = rig.vertices
    a, b, c = points[faces[:, 0]], points[faces[:, 1]], points[faces[:, 2]]
    areas = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (areas > 0).mean() > 0.97
    # +z toward the camera: the nose tip is in front of the face oval.
    assert points[1, 2] > points[face_topology().face_oval, 2].max()


def test_real_rig_jaw_and_mouth_interior(portrait_rig):
    _, rig = portrait_rig
    jaw = rig.deltas[INDEX["jawOpen"]]
    face_height = np.linalg.norm(rig.vertices[FOREHEAD_TOP] - rig.vertices[CHIN_BOTTOM])
    assert 0.04 * face_height < -jaw[CHIN_BOTTOM, 1] < 0.3 * face_height
    shaped = rig.vertices + jaw
    # The lips part by about half the mouth's width.
    mouth_width = np.linalg.norm(rig.vertices[78] - rig.vertices[308])
    assert 0.3 * mouth_width < shaped[13, 1] - shaped[14, 1] < 1.0 * mouth_width
    loop = face_topology().lips_inner_loop
    polygon = shaped[loop, :2]
    centre = polygon.mean(axis=0)
    mouth_faces = rig.faces[(rig.faces >= N_LANDMARKS).any(axis=1)]
    triangles = shaped[mouth_faces][..., :2]
    # Points between the mouth centre and each inner-lip point all land on mouth-interior triangles.
    samples = np.concatenate([centre + f * (polygon - centre) for f in np.linspace(0.0, 0.95, 12)])
    a, b, c = (triangles[None, :, i] for i in range(3))
    p = samples[:, None]

    def cross(o, q, r):
        return (q[..., 0] - o[..., 0]) * (r[..., 1] - o[..., 1]) - (q[..., 1] - o[..., 1]) * (r[..., 0] - o[..., 0])
    d1, d2, d3 = cross(a, b, p), cross(b, c, p), cross(c, a, p)
    inside = ((d1 >= 0) & (d2 >= 0) & (d3 >= 0)) | ((d1 <= 0) & (d2 <= 0) & (d3 <= 0))
    assert inside.any(axis=1).all()


def test_non_square_portrait_works():
    image = load("lp_s9_mona_lisa.jpg")
    assert image.shape[0] != image.shape[1]
    rig = reconstruct(image, 128, ReconstructConfig())
    x0, y0, side = rig.crop_box
    assert x0 + side <= image.shape[1] and y0 + side <= image.shape[0]
    assert rig.texture.shape == (128 + 16, 128, 3)
    assert np.isfinite(rig.deltas).all()


def test_portrait_without_a_face_is_rejected():
    gray = np.full((240, 320, 3), 128, np.uint8)
    assert detect_faces(gray) == []
    with pytest.raises(AvatarInputError, match="no face found in the portrait"):
        reconstruct(gray, 128, ReconstructConfig())
    background = load("sfhq_pt1_00000161.jpg")[:120, :120]
    with pytest.raises(AvatarInputError, match="no face"):
        reconstruct(np.ascontiguousarray(background), 128, ReconstructConfig())


def test_tiny_portrait_is_rejected():
    with pytest.raises(AvatarInputError, match="pixels"):
        reconstruct(np.zeros((20, 30, 3), np.uint8), 128, ReconstructConfig())


def test_several_faces_use_the_largest_and_count_them():
    big = load("sfhq_pt1_00000161.jpg")
    small = np.asarray(Image.fromarray(load("sfhq_pt2_00000754.jpg")).resize((360, 360)))
    canvas = np.zeros((big.shape[0], big.shape[1] + small.shape[1], 3), np.uint8)
    canvas[:, : big.shape[1]] = big
    canvas[: small.shape[0], big.shape[1]:] = small
    rig = reconstruct(canvas, 128, ReconstructConfig())
    assert rig.n_faces_found == 2
    x0, _, side = rig.crop_box
    assert x0 + side / 2 < big.shape[1], "the crop must be centred on the larger (left) face"
