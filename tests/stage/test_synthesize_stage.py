"""One synthesize shard in a real Blender process: the labels agree with the pixels Blender drew."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.synthesize.checks import figure_measures
from tasks.synthesize.config import SynthesisConfig
from tasks.synthesize.labels import CLASS_ID
from tasks.synthesize.plan import plan_identities, plan_shards
from tasks.synthesize.render import FaceSources, render_shard
from tasks.synthesize.shape import fit_shape_model
from tests.conftest import sample
from tests.unit.test_synthesize_shape import training_faces

RESOLUTION = 128
NOSE_TIP, IRIS_CENTRES = 1, (468, 473)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    work = tmp_path_factory.mktemp("synthesize")
    blank = work / "blank.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(blank)
    green = work / "green.png"  # a background image: every sample shows it behind the head
    Image.fromarray(np.tile(np.array([0, 255, 0], np.uint8), (90, 160, 1))).save(green)
    portraits = [sample("portraits", "sfhq_pt2_00000137.jpg"), blank]
    identities = plan_identities(portraits, (0.8, 0.1, 0.1), seed=11)
    config = SynthesisConfig(resolution=RESOLUTION, cycles_samples=2, yaw=(-30.0, 30.0))
    (planned,) = plan_shards(identities, samples_per_identity=3, samples_per_shard=6)
    # The face takes another shape: the labels below must follow the shaped mesh.
    sources = FaceSources(backgrounds=(str(green),), shape_model=fit_shape_model(training_faces(30)[0], components=4))
    return planned, render_shard(planned, work / "work", config, seed=11, sources=sources), work


def test_a_portrait_without_a_face_costs_its_own_rows_only(shard):
    planned, result, work = shard
    assert list(result.failures) == ["id00001"]
    assert "\n" not in result.failures["id00001"] and "face" in result.failures["id00001"]
    np.testing.assert_array_equal(result.arrays["rendered"], [True] * 3 + [False] * 3)
    assert not result.arrays["landmarks_2d"][3:].any() and not result.arrays["depth"][3:].any()
    assert [row["sample"] for row in result.rows] == [0, 1, 2]
    assert all(len(row["shape"]) == 4 and row["shape"] == result.rows[0]["shape"] for row in result.rows)
    assert sorted(result.images) == [f"id00000_000{j}.png" for j in range(3)]
    for row in result.rows:
        with Image.open(result.images[row["image"].removeprefix("images/")]) as image:
            assert image.size == (RESOLUTION, RESOLUTION) and image.mode == "RGB"


def _at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The pixel each continuous coordinate falls in."""
    cells = np.clip(np.floor(points).astype(int), 0, image.shape[0] - 1)
    return image[cells[:, 1], cells[:, 0]]


def test_visible_landmarks_lie_on_the_rendered_surface_and_hidden_ones_behind_it(shard):
    _, result, _ = shard
    arrays = result.arrays
    for k in range(3):
        visible = arrays["visible"][k]
        assert 150 < visible.sum() < 478, visible.sum()  # a turned head hides some, shows most
        depth_there = _at(arrays["depth"][k], arrays["landmarks_2d"][k])
        z = arrays["landmarks_3d"][k][:, 2]
        on_surface = np.abs(depth_there - z) < 0.03 * z
        assert on_surface[visible].mean() > 0.85, on_surface[visible].mean()
        behind = depth_there < z * 0.995
        assert behind[~visible].mean() > 0.85, behind[~visible].mean()


def test_segmentation_and_normals_match_the_face(shard):
    _, result, _ = shard
    arrays = result.arrays
    for k in range(3):
        segmentation = arrays["segmentation"][k]
        face = segmentation > 0
        assert (segmentation == CLASS_ID["background"]).any() and (segmentation == CLASS_ID["skin"]).any()
        assert face.sum() == (arrays["depth"][k] > 0).sum()  # the class pass and the depth pass agree
        if arrays["visible"][k][NOSE_TIP]:
            assert _at(segmentation, arrays["landmarks_2d"][k][[NOSE_TIP]])[0] == CLASS_ID["skin"]
        normals = arrays["normals"][k].astype(np.float32)[face]
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=0.02)
        assert (normals[:, 2] < 0).mean() > 0.9  # the surface faces the camera (OpenCV: it looks along +z)
    eyes = [_at(arrays["segmentation"][k], arrays["landmarks_2d"][k][list(IRIS_CENTRES)])[
        arrays["visible"][k][list(IRIS_CENTRES)]] for k in range(3)]
    assert (np.concatenate(eyes) == CLASS_ID["eyes"]).mean() > 0.5


def test_a_head_surrounds_the_face_in_every_render(shard):
    _, result, _ = shard
    for segmentation in result.arrays["segmentation"][:3]:
        enclosed, head_border_share = figure_measures(segmentation)
        # the rest of the outline is the face's own silhouette (profile, far cheek) against the background
        assert head_border_share > 0.5, head_border_share
        assert (segmentation == CLASS_ID["hair"]).any() and (segmentation == CLASS_ID["head"]).any()
        # no background shows through the head: between the mask and the skull, or under the chin
        assert enclosed == 0


def test_labels_hold_the_drawn_scene(shard):
    planned, result, _ = shard
    arrays = result.arrays
    from tasks.synthesize.sampling import draw_scenes

    draws = draw_scenes(11, 0, 3, SynthesisConfig(resolution=RESOLUTION, cycles_samples=2, yaw=(-30.0, 30.0)))
    np.testing.assert_array_equal(arrays["weights"][:3], draws.weights)
    np.testing.assert_array_equal(arrays["head_pose"][:3], draws.head_pose)
    focal = arrays["camera/intrinsics"][:3, 0, 0]
    np.testing.assert_allclose(focal, draws.camera[:, 0] / 36.0 * RESOLUTION, rtol=1e-5)
    rotation = arrays["camera/extrinsics"][:3, :, :3].astype(np.float64)
    np.testing.assert_allclose(rotation @ np.swapaxes(rotation, 1, 2), np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-5)
    assert all(abs(row["yaw_deg"]) < 30.0 + 8.0 for row in result.rows)  # the head's range plus the camera orbit


def test_a_background_image_fills_the_view_behind_the_head(shard):
    _, result, work = shard
    for k, row in enumerate(result.rows):
        with Image.open(result.images[row["image"].removeprefix("images/")]) as image:
            pixels = np.asarray(image).astype(int)
        behind = result.arrays["segmentation"][k] == CLASS_ID["background"]
        assert behind.mean() > 0.2 and not result.arrays["depth"][k][behind].any()
        colour = pixels[behind].mean(axis=0)
        assert colour[1] > 150 and colour[0] < 60 and colour[2] < 60, colour  # the image, not the sky
