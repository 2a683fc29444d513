"""Mouth-interior colours and geometry, the per-photo lip closing, and the eyeballs' gaze rotation,
on synthetic landmarks (the canonical face shape in a small crop) and tiny arrays."""

import numpy as np
import pytest
from scipy.ndimage import maximum_filter1d

from tasks.common.arkit import INDEX
from tasks.reconstruct.canonical_shape import load_canonical_shape
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.eyes import EYEBALL_PARTS, LID_PARTS, LID_ROWS, eyeball_centre, gaze_angles, rotate_eye
from tasks.reconstruct.face_frame import face_frame
from tasks.reconstruct.mouth import (_LIP_SEAM, LUMA, PATCH_SPANS, fill_photo_mouth, inner_lip_gap, inside_polygon,
                                     mouth_colours, paint_patches, paste_photo_teeth, patch_colour, patch_uv,
                                     photo_teeth_colour, rest_closing_offset)
from tasks.reconstruct.rig import build_face_rig, landmarks_to_world
from tasks.reconstruct.topology import N_LANDMARKS, face_topology

SIZE = 128
CONFIG = ReconstructConfig()
LIPS = np.array([175.0, 95.0, 100.0])


def synthetic_landmarks(scale=24.0, size=SIZE, mouth_open=0.0):
    """Canonical shape in crop pixels; mouth_open lowers the lower inner lip (and the chin below
    it, less) by that many inter-ocular distances."""
    shape = load_canonical_shape()
    points = np.stack([size / 2 + scale * shape[:, 0], size / 2 - scale * (shape[:, 1] - shape[:, 1].mean()),
                       -scale * shape[:, 2]], axis=1)
    if mouth_open:
        topology = face_topology()
        lower = topology.lips_inner_lower[1:-1]
        points[lower, 1] += mouth_open * scale
        lip_y = points[topology.lips_inner_upper, 1].mean()
        below = (points[:, 1] > lip_y + 0.1 * scale) & ~np.isin(np.arange(len(points)), lower)
        points[below, 1] += 0.5 * mouth_open * scale * np.exp(-((points[below, 1] - lip_y) / (1.2 * scale)) ** 2)
    return points.astype(np.float32)


def crop_image(size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(60, 200, size=(size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def rig():
    return build_face_rig(crop_image(), synthetic_landmarks(), CONFIG)


def red_minus_green(rgb):
    rgb = np.asarray(rgb, np.float64)
    return (rgb[..., 0] - rgb[..., 1]) / 255


# -- colours ------------------------------------------------------------------------------------

@pytest.mark.parametrize("lips,face_luma", [(LIPS, 140.0), (np.array([70.0, 35.0, 35.0]), 40.0),
                                            (np.array([150.0, 120.0, 110.0]), 170.0)])
def test_cavity_is_dark_red_with_depth_falloff_never_black(lips, face_luma):
    colours = mouth_colours(lips, face_luma)
    depth = np.linspace(0.0, 1.0, 41)
    cavity = patch_colour("cavity", depth, 0.5, colours)
    luma = cavity @ LUMA
    behind_seam = depth >= _LIP_SEAM
    assert (np.diff(luma[behind_seam]) < 0).all()         # deeper is darker
    walls = luma[behind_seam]
    assert luma.min() >= 25 and walls[0] > 1.3 * walls[-1]  # never near-black, yet a clear falloff
    assert colours.cavity_front @ LUMA > 1.5 * (colours.cavity_back @ LUMA)
    assert luma[0] < 0.8 * walls[0]                       # the lips' inner edge: a shadowed seam
    assert red_minus_green(cavity).min() >= 0.12          # red all the way back


def test_teeth_patch_has_separate_shaded_teeth_and_gums():
    colours = mouth_colours(LIPS, 140.0)
    s = np.linspace(0.0, 1.0, 400)
    for part, edges in (("teeth_upper", 4), ("teeth_lower", 4)):
        row = patch_colour(part, s, 0.8, colours, ds=0.002) @ LUMA
        # Dark gaps split the row into separate teeth: one between the central incisors and
        # `edges` either side, each much darker than the teeth around it.
        gap = row < 0.6 * maximum_filter1d(row, 15)
        assert np.count_nonzero(np.diff(gap.astype(int)) == 1) == 2 * edges + 1, part
        centre, side = row[len(s) // 2 + 10], row[5]
        assert side < 0.7 * centre                        # the arch's sides are in shadow
        assert row.max() > 150
    upper_gum = patch_colour("teeth_upper", 0.45, 0.1, colours)
    upper_tooth = patch_colour("teeth_upper", 0.45, 0.8, colours)
    assert red_minus_green(upper_gum) > red_minus_green(upper_tooth) + 0.1
    lower_gum = patch_colour("teeth_lower", 0.45, 0.1, colours)
    assert red_minus_green(lower_gum) > 0.1


def test_tongue_is_red_and_darker_at_the_root():
    colours = mouth_colours(LIPS, 140.0)
    tip, root = patch_colour("tongue", 0.0, 0.3, colours), patch_colour("tongue", 1.0, 0.3, colours)
    assert red_minus_green(tip) >= 0.15 and tip @ LUMA > 1.4 * (root @ LUMA)


@pytest.mark.parametrize("size", [128, 256, 512])
def test_painted_band_matches_patch_colours_at_their_uvs(size):
    colours = mouth_colours(LIPS, 140.0)
    band = size // 8
    image = np.zeros((size + band, size, 3), np.uint8)
    paint_patches(image, (0, size, size, size + band), colours)
    rect = (0.0, 0.0, 1.0, band / (size + band))
    for part in ("cavity", "tongue", "sclera"):
        s, t = np.meshgrid(np.linspace(0, 1, 7), np.linspace(0, 1, 5))
        uv = patch_uv(part, s.ravel(), t.ravel(), rect)
        cols = np.floor(uv[:, 0] * size).astype(int)
        rows = np.floor((1 - uv[:, 1]) * (size + band)).astype(int)
        assert (rows >= size).all()
        painted = image[rows, cols].astype(float)
        # Nearest lookup lands within a texel of (s, t): compare against the colour range there.
        expected = patch_colour(part, s.ravel(), t.ravel(), colours)
        assert np.abs(painted - expected).max() < 25, part
    # Patches stay inside their own columns.
    for part, (start, end) in PATCH_SPANS.items():
        uv = patch_uv(part, np.array([0.0, 1.0]), np.array([0.0, 1.0]), rect)
        assert (uv[:, 0] > start).all() and (uv[:, 0] < end).all()


def test_photo_teeth_colour_is_found_only_in_an_open_mouth():
    landmarks = synthetic_landmarks(mouth_open=0.35)
    crop = np.full((SIZE, SIZE, 3), 120, np.uint8)
    loop = face_topology().lips_inner_loop
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    inside = inside_polygon(centres, landmarks[loop, :2].astype(float)).reshape(SIZE, SIZE)
    crop[inside] = (225, 218, 200)
    teeth = photo_teeth_colour(crop, landmarks, face_luma=120.0)
    assert teeth is not None and np.abs(teeth - [225, 218, 200]).max() <= 1
    # A mouth that shows only its dark inside, or a closed one, gives no teeth colour.
    crop[inside] = (60, 25, 25)
    assert photo_teeth_colour(crop, landmarks, 120.0) is None
    closed = landmarks.copy()
    closed[face_topology().lips_inner_lower] = closed[face_topology().lips_inner_upper]
    assert photo_teeth_colour(np.full((SIZE, SIZE, 3), 230, np.uint8), closed, 120.0) is None
    # A pale pink tongue is not taken for teeth.
    crop[inside] = (225, 170, 170)
    assert photo_teeth_colour(crop, landmarks, 120.0) is None


# -- the per-photo closing of an open mouth -------------------------------------------------------

def test_open_mouth_photo_is_closed_at_rest():
    topology = face_topology()
    photo = landmarks_to_world(synthetic_landmarks(mouth_open=0.35), SIZE)
    iod = face_frame(photo).inter_ocular
    assert np.abs(inner_lip_gap(photo)[:, 1]).max() > 0.3 * iod
    offset = rest_closing_offset(photo, CONFIG)
    closed = photo + offset
    assert np.abs(inner_lip_gap(closed)).max() < 1e-6
    # The upper lip travels its share of the gap, the lower lip the rest.
    upper, lower = topology.lips_inner_upper[1:-1], topology.lips_inner_lower[1:-1]
    up_move, low_move = -offset[upper, 1].mean(), offset[lower, 1].mean()
    assert up_move / (up_move + low_move) == pytest.approx(CONFIG.rest_close_upper_share, abs=0.02)
    # Eyes, brows and the face outline stay where the photo has them.
    fixed = np.concatenate([topology.face_oval, topology.eye_left.loop, topology.eye_right.loop,
                            topology.eye_left.iris, topology.eye_right.iris])
    assert np.abs(offset[fixed]).max() == 0.0
    # The outer lips move with the inner ones; the forehead not at all.
    assert offset[topology.lips_outer_lower[1:-1], 1].mean() > 0.5 * low_move
    assert np.abs(offset[10]).max() == 0.0


def test_closed_mouth_photo_gets_no_offset():
    photo = landmarks_to_world(synthetic_landmarks(), SIZE)
    topology = face_topology()
    photo[topology.lips_inner_lower[1:-1]] = photo[topology.lips_inner_upper[1:-1]]
    assert np.abs(rest_closing_offset(photo, CONFIG)).max() == 0.0


def test_rig_of_an_open_mouth_photo_rests_closed_and_keeps_the_photo_uvs():
    landmarks = synthetic_landmarks(mouth_open=0.35)
    rig = build_face_rig(crop_image(), landmarks, CONFIG)
    topology = face_topology()
    assert np.abs(inner_lip_gap(rig.vertices[:N_LANDMARKS])).max() < 1e-6
    band = SIZE // 8
    np.testing.assert_allclose(rig.uv_photo[:N_LANDMARKS, 0], landmarks[:, 0] / SIZE, atol=1e-6)
    np.testing.assert_allclose(rig.uv_photo[:N_LANDMARKS, 1], 1 - landmarks[:, 1] / (SIZE + band), atol=1e-6)
    # jawOpen still opens it, and the cavity's front ring follows each lip, not its closed twin.
    opened = rig.vertices + rig.deltas[INDEX["jawOpen"]]
    assert (opened[topology.lips_inner_upper[1:-1], 1] - opened[topology.lips_inner_lower[1:-1], 1]).min() > 0
    front = np.flatnonzero(np.isin(rig.parts, ["cavity_upper", "cavity_lower"]))[:len(topology.lips_inner_loop)]
    np.testing.assert_allclose(opened[front], opened[topology.lips_inner_loop], atol=1e-6)


# -- eyes -----------------------------------------------------------------------------------------

def test_gaze_weights_map_to_eyeball_rotation():
    for side, outward in (("Left", 1.0), ("Right", -1.0)):
        yaw, pitch = gaze_angles({f"eyeLookOut{side}": 1.0}, side, CONFIG)
        assert yaw == pytest.approx(outward * np.radians(CONFIG.eye_yaw_degrees)) and pitch == 0.0
        yaw, _ = gaze_angles({f"eyeLookIn{side}": 0.5}, side, CONFIG)
        assert yaw == pytest.approx(-outward * 0.5 * np.radians(CONFIG.eye_yaw_degrees))
        _, pitch = gaze_angles({f"eyeLookUp{side}": 1.0, f"eyeLookDown{side}": 0.25}, side, CONFIG)
        assert pitch == pytest.approx(0.75 * np.radians(CONFIG.eye_pitch_degrees))
        assert gaze_angles({f"eyeLookIn{side}": 1.0, f"eyeLookOut{side}": 1.0}, side, CONFIG) == (0.0, 0.0)
    # Both eyes follow one gaze direction: left eye out and right eye in turn the same way.
    assert gaze_angles({"eyeLookOutLeft": 1.0}, "Left", CONFIG)[0] == \
        pytest.approx(gaze_angles({"eyeLookInRight": 1.0}, "Right", CONFIG)[0])


def test_rotate_eye_turns_the_front_and_keeps_distances():
    centre = np.array([0.1, 0.2, -0.3])
    points = centre + np.array([[0.0, 0.0, 0.5], [0.1, 0.05, 0.45], [-0.2, 0.1, 0.3]])
    turned = rotate_eye(points, centre, np.radians(20), 0.0)
    np.testing.assert_allclose(np.linalg.norm(turned - centre, axis=1), np.linalg.norm(points - centre, axis=1))
    assert turned[0, 0] - points[0, 0] == pytest.approx(0.5 * np.sin(np.radians(20)))
    up = rotate_eye(points, centre, 0.0, np.radians(10))
    assert up[0, 1] > points[0, 1] and up[0, 0] == pytest.approx(points[0, 0])


def test_eyeball_front_is_the_photo_at_rest(rig):
    band = SIZE // 8
    for label in EYEBALL_PARTS.values():
        eye = np.flatnonzero(rig.parts == label)
        assert len(eye) > 20
        front = eye[rig.uv_photo[eye, 1] > band / (SIZE + band)]  # photo UVs; the sides use the band
        assert len(front) >= 20
        # UV = the photo under each front vertex, so at rest the opening renders the photo.
        xy = rig.vertices[front, :2]
        np.testing.assert_allclose(rig.uv_photo[front, 0], xy[:, 0] + 0.5, atol=1e-5)
        np.testing.assert_allclose(rig.uv_photo[front, 1], 1 - (0.5 - xy[:, 1]) * SIZE / (SIZE + band), atol=1e-5)


def _surface_z(points_xy, vertices, faces):
    """Largest z of the triangles above each xy (-inf where none)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    e0, e1 = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2]
    det = e0[:, 0] * e1[:, 1] - e0[:, 1] * e1[:, 0]
    good = np.abs(det) > 1e-12
    z = np.full(len(points_xy), -np.inf)
    for i, p in enumerate(points_xy):
        d = p - a[:, :2]
        l1 = (d[:, 0] * e1[:, 1] - d[:, 1] * e1[:, 0]) / np.where(good, det, 1)
        l2 = (e0[:, 0] * d[:, 1] - e0[:, 1] * d[:, 0]) / np.where(good, det, 1)
        inside = good & (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)
        if inside.any():
            z[i] = (a[:, 2] + l1 * (b[:, 2] - a[:, 2]) + l2 * (c[:, 2] - a[:, 2]))[inside].max()
    return z


@pytest.mark.parametrize("weights", [{}, {"eyeLookOutLeft": 1.0, "eyeLookInRight": 1.0},
                                     {"eyeLookUpLeft": 1.0, "eyeLookUpRight": 1.0},
                                     {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}])
def test_eyeball_stays_behind_the_lids_outside_the_opening(rig, weights):
    shaped = (rig.vertices + sum(w * rig.deltas[INDEX[n]] for n, w in weights.items())).astype(np.float64)
    topology = face_topology()
    rng = np.random.default_rng(0)
    for label, eye in (("eye_left", topology.eye_left), ("eye_right", topology.eye_right)):
        members = np.flatnonzero(rig.parts == label)
        faces = rig.faces[np.isin(rig.faces, members).all(axis=1)]
        weights = rng.dirichlet([1, 1, 1], size=(len(faces), 8))
        samples = np.einsum("fsk,fkd->fsd", weights, shaped[faces]).reshape(-1, 3)
        outside = ~inside_polygon(samples[:, :2], shaped[eye.loop, :2])
        skin = _surface_z(samples[outside, :2], shaped, topology.faces)
        assert np.isfinite(skin).all()
        assert (samples[outside, 2] < skin).all(), label


def test_gaze_shapes_turn_the_eyeballs_and_the_iris_landmarks(rig):
    topology = face_topology()
    left = np.flatnonzero(rig.parts == "eye_left")
    right = np.flatnonzero(rig.parts == "eye_right")
    out_left = rig.deltas[INDEX["eyeLookOutLeft"]]
    iris_left = topology.eye_left.iris
    assert (out_left[iris_left, 0] > 0).all() and (rig.deltas[INDEX["eyeLookInLeft"]][iris_left, 0] < 0).all()
    assert (out_left[left, 0] > 0).mean() > 0.6
    assert np.abs(out_left[right]).max() == 0.0
    # The iris centre moves by about R sin(yaw) (radius R in eye widths), the eye corners not at all.
    width = np.linalg.norm(rig.vertices[topology.eye_left.upper[0], :2] - rig.vertices[topology.eye_left.upper[-1], :2])
    expected = CONFIG.eyeball_radius * width * np.sin(np.radians(CONFIG.eye_yaw_degrees))
    assert out_left[iris_left[0], 0] == pytest.approx(expected, rel=0.25)
    assert np.abs(out_left[topology.eye_left.loop]).max() == 0.0
    up = rig.deltas[INDEX["eyeLookUpRight"]]
    assert (up[topology.eye_right.iris, 1] > 0).all()
    # Points keep their distance from the eyeball centre at full weight.
    centre = eyeball_centre(rig.vertices, topology.eye_left, CONFIG)
    before = np.linalg.norm(rig.vertices[left] - centre, axis=1)
    after = np.linalg.norm(rig.vertices[left] + out_left[left] - centre, axis=1)
    np.testing.assert_allclose(after, before, rtol=1e-3)
    # A blink backs the eyeball away; the jaw leaves it alone.
    assert (rig.deltas[INDEX["eyeBlinkLeft"]][left, 2] < 0).all()
    assert np.abs(rig.deltas[INDEX["jawOpen"]][np.concatenate([left, right])]).max() == 0.0


def test_closing_lid_is_flat_at_rest_and_covers_the_eye_on_a_blink(rig):
    topology = face_topology()
    for side, eye in (("Left", topology.eye_left), ("Right", topology.eye_right)):
        lid = np.flatnonzero(rig.parts == LID_PARTS[side])
        assert len(lid) == LID_ROWS * len(eye.upper)
        lid_faces = rig.faces[np.isin(rig.faces, lid).all(axis=1)]
        a, b, c = (rig.vertices[lid_faces[:, i], :2].astype(np.float64) for i in range(3))
        rest_area = np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
        assert rest_area.max() < 1e-12  # nothing of it shows at rest
        blinked = (rig.vertices + rig.deltas[INDEX[f"eyeBlink{side}"]]).astype(np.float64)
        opening = rig.vertices[eye.loop, :2].astype(np.float64)
        low, high = opening.min(axis=0), opening.max(axis=0)
        grid = np.stack(np.meshgrid(np.linspace(low[0], high[0], 40), np.linspace(low[1], high[1], 12)), -1)
        grid = grid.reshape(-1, 2)
        # The eye opening above the line where the lids meet lies under the lid.
        upper_part = grid[inside_polygon(grid, opening)]
        meet_y = np.interp(upper_part[:, 0], *zip(*sorted(zip(blinked[eye.lower, 0], blinked[eye.lower, 1]))))
        upper_part = upper_part[upper_part[:, 1] > meet_y + 0.002]
        tri = blinked[lid_faces][..., :2]
        ta, tb, tc = (tri[None, :, i] for i in range(3))
        p = upper_part[:, None]

        def cross(o, q, r):
            return (q[..., 0] - o[..., 0]) * (r[..., 1] - o[..., 1]) - (q[..., 1] - o[..., 1]) * (r[..., 0] - o[..., 0])
        d1, d2, d3 = cross(ta, tb, p), cross(tb, tc, p), cross(tc, ta, p)
        covered = (((d1 >= 0) & (d2 >= 0) & (d3 >= 0)) | ((d1 <= 0) & (d2 <= 0) & (d3 <= 0))).any(axis=1)
        assert len(upper_part) > 20 and covered.mean() > 0.95, side
        # ...and in front of the eyeball behind it.
        eyeball = rig.parts == EYEBALL_PARTS[side]
        assert blinked[lid, 2].min() > blinked[eyeball, 2].max()


def test_photo_teeth_are_pasted_where_an_open_mouth_shows_them():
    landmarks = synthetic_landmarks(mouth_open=0.35)
    crop = np.full((SIZE, SIZE, 3), (150, 110, 100), np.uint8)
    loop = face_topology().lips_inner_loop
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    inside = inside_polygon(centres, landmarks[loop, :2].astype(float)).reshape(SIZE, SIZE)
    crop[inside] = (70, 20, 25)                                       # a dark mouth...
    upper_lip = landmarks[face_topology().lips_inner_upper, 1].max()
    crop[inside & (yy < upper_lip + 4)] = (236, 230, 214)             # ...with upper teeth under the lip
    colours = mouth_colours(LIPS, 140.0)
    band = SIZE // 8
    image = np.zeros((SIZE + band, SIZE, 3), np.uint8)
    paint_patches(image, (0, SIZE, SIZE, SIZE + band), colours)
    painted = image.copy()
    replaced = paste_photo_teeth(image, (0, SIZE, SIZE, SIZE + band), crop, landmarks, colours)
    changed = np.any(image != painted, axis=2)
    assert replaced > 0 and changed.sum() <= replaced
    assert (image[changed] == (236, 230, 214)).all()                 # only the photo's teeth, nothing dark
    start, end = PATCH_SPANS["teeth_upper"]
    cols = np.flatnonzero(changed.any(axis=0))
    assert cols.min() + 0.5 >= start * SIZE and cols.max() + 0.5 < end * SIZE
    # A closed photo has nothing to give.
    closed = synthetic_landmarks()
    closed[face_topology().lips_inner_lower] = closed[face_topology().lips_inner_upper]
    assert paste_photo_teeth(painted.copy(), (0, SIZE, SIZE, SIZE + band), crop, closed, colours) == 0


def test_open_mouth_inside_is_painted_over_for_the_closed_rest():
    landmarks = synthetic_landmarks(mouth_open=0.35)
    crop = np.full((SIZE, SIZE, 3), (150, 110, 100), np.uint8)
    loop = landmarks[face_topology().lips_inner_loop, :2].astype(float)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    inside = inside_polygon(centres, loop).reshape(SIZE, SIZE)
    crop[inside] = (236, 230, 214)
    filled = fill_photo_mouth(crop, landmarks, LIPS, margin_px=1.5)
    assert (filled[inside] == np.round(0.8 * LIPS)).all()           # no teeth left on the lips' rim
    changed = np.any(filled != crop, axis=2)
    rows, cols = np.nonzero(changed)
    assert cols.min() >= loop[:, 0].min() - 1 and cols.max() <= loop[:, 0].max() + 1
    assert rows.min() >= loop[:, 1].min() - 2.5 and rows.max() <= loop[:, 1].max() + 2.5
    assert (crop[inside] == (236, 230, 214)).all()                   # the photo itself is left alone
