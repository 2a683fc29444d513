"""Sampling, planning, camera labels and the store of `avatarflow synthesize` (no Blender)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from tasks.common.arkit import ARKIT_NAMES, INDEX
from tasks.synthesize.config import SynthesisConfig
from tasks.synthesize.labels import euler_xyz, extrinsics, head_angles_to_camera, intrinsics, project, to_camera
from tasks.synthesize.plan import Identity, assign_splits, plan_shards
from tasks.synthesize.sampling import draw_scenes, mirror_channel


def test_draws_depend_only_on_the_seed_and_the_identity():
    config = SynthesisConfig()
    first, again = draw_scenes(5, 3, 6, config), draw_scenes(5, 3, 6, config)
    for name, values in first.arrays().items():
        np.testing.assert_array_equal(values, again.arrays()[name])
    # a shorter draw is the start of a longer one, so a sample never depends on the shard size
    np.testing.assert_array_equal(draw_scenes(5, 3, 2, config).camera, first.camera[:2])
    assert not np.array_equal(draw_scenes(5, 4, 6, config).weights, first.weights)
    assert not np.array_equal(draw_scenes(6, 3, 6, config).weights, first.weights)


def test_expressions_are_sparse_coupled_and_never_contradict_themselves():
    draws = draw_scenes(0, 0, 600, SynthesisConfig())
    weights = draws.weights
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    active = (weights > 0).sum(axis=1)
    assert 2 < active.mean() < 20, active.mean()  # sparse, but never a frozen face
    for side in ("Left", "Right"):
        both = (weights[:, INDEX["eyeBlink" + side]] > 0) & (weights[:, INDEX["eyeWide" + side]] > 0)
        assert not both.any()
    # both eyes look the same way
    np.testing.assert_array_equal(weights[:, INDEX["eyeLookOutLeft"]], weights[:, INDEX["eyeLookInRight"]])
    np.testing.assert_array_equal(weights[:, INDEX["eyeLookUpLeft"]], weights[:, INDEX["eyeLookUpRight"]])
    left, right = weights[:, INDEX["mouthSmileLeft"]], weights[:, INDEX["mouthSmileRight"]]
    assert np.corrcoef(left, right)[0, 1] > 0.7
    assert set(np.unique(draws.emotion)) == set(range(-1, 7)) - {0}  # every emotion but neutral, and none
    assert mirror_channel("browDownLeft") == "browDownRight" and mirror_channel("jawOpen") is None
    assert len(ARKIT_NAMES) == weights.shape[1]


def test_poses_cameras_and_lights_stay_in_their_ranges():
    config = SynthesisConfig(yaw=(-30.0, 10.0), lens_mm=(50.0, 60.0), area_lights=(2, 2))
    draws = draw_scenes(1, 0, 300, config)
    yaw = np.degrees(draws.head_pose[:, 1])
    assert yaw.min() >= -30.0 - 1e-4 and yaw.max() <= 10.0 + 1e-4
    assert yaw.min() < -25 and yaw.max() > 5
    assert draws.camera[:, 0].min() >= 50.0 and draws.camera[:, 0].max() <= 60.0
    orbit = np.hypot(draws.camera[:, 2], draws.camera[:, 3])
    assert orbit.max() <= config.camera_orbit + 1e-4
    np.testing.assert_array_equal(draws.lights[:, :, 0], 1.0)


@pytest.mark.parametrize("bad", [{"yaw": (10.0, -10.0)}, {"split": (0.5, 0.2, 0.2)}, {"resolution": 99},
                                 {"area_lights": (3, 1)}, {"cycles_samples": 0}, {"unknown": 1}])
def test_config_refuses_bad_settings(bad):
    with pytest.raises(ValidationError):
        SynthesisConfig(**bad)


def test_splits_follow_the_shares_and_shards_hold_whole_identities():
    splits = assign_splits(100, (0.8, 0.1, 0.1), seed=3)
    assert {s: splits.count(s) for s in ("train", "val", "test")} == {"train": 80, "val": 10, "test": 10}
    assert splits == assign_splits(100, (0.8, 0.1, 0.1), seed=3) != assign_splits(100, (0.8, 0.1, 0.1), seed=4)
    identities = [Identity(index=k, name=f"id{k}", portrait=f"p{k}.png", split=splits[k]) for k in range(7)]
    shards = plan_shards(identities, samples_per_identity=3, samples_per_shard=7)
    assert [len(s.identities) for s in shards] == [2, 2, 2, 1]
    assert [s.start for s in shards] == [0, 6, 12, 18]
    assert all(s.start % shards[0].n_samples == 0 for s in shards)  # shards write whole chunks
    # an identity larger than a shard still gets one shard of its own
    assert [s.n_samples for s in plan_shards(identities[:2], samples_per_identity=9, samples_per_shard=4)] == [9, 9]


def test_camera_labels_follow_the_opencv_convention():
    # A Blender camera at z = 5 looking down -Z with +Y up: world +x is image right, world +y image up.
    camera_world = np.eye(4)
    camera_world[2, 3] = 5.0
    world_to_camera = extrinsics(camera_world)
    points = to_camera(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), world_to_camera)
    np.testing.assert_allclose(points[0], [0.0, 0.0, 5.0])
    np.testing.assert_allclose(points[2], [0.0, 0.0, 4.0])
    pixels = project(points, intrinsics(36.0, 200))  # focal length = image width
    np.testing.assert_allclose(pixels[0], [100.0, 100.0])
    np.testing.assert_allclose(pixels[1], [100.0 + 200.0 / 5.0, 100.0 - 200.0 / 5.0])
    # a head turned by +20 deg of yaw (toward world +x) looks toward image right; a raised chin is pitch up
    assert head_angles_to_camera(euler_xyz(0.0, np.radians(20.0), 0.0), world_to_camera)[0] == pytest.approx(20.0)
    assert head_angles_to_camera(euler_xyz(np.radians(-10.0), 0.0, 0.0), world_to_camera)[1] == pytest.approx(10.0)


def test_the_head_closes_the_face_mask_and_reaches_behind_it():
    from collections import Counter

    from tasks.reconstruct.canonical_shape import load_canonical_shape
    from tasks.reconstruct.topology import face_topology
    from tasks.synthesize.head import build_head

    shape = load_canonical_shape().astype(np.float32)  # y up, z toward the viewer, like a rig
    head = build_head(shape)
    topology = face_topology()
    faces = np.concatenate([topology.faces, head.faces])
    edges = Counter(tuple(sorted(edge)) for f in faces for edge in ((f[0], f[1]), (f[1], f[2]), (f[0], f[2])))
    assert max(edges.values()) == 2  # a manifold surface
    # the only open edges left are the eye and mouth holes, which the eyeballs and the mouth interior fill
    holes = set()
    for loop in (topology.lips_inner_loop, topology.eye_left.loop, topology.eye_right.loop):
        holes |= {tuple(sorted((loop[i], loop[i - 1]))) for i in range(len(loop))}
    assert {edge for edge, count in edges.items() if count == 1} == holes
    everything = np.concatenate([shape, head.vertices])
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse import coo_matrix

    attached = head.faces[head.attached]  # the neck and the ears, closed surfaces of their own
    graph = coo_matrix((np.ones(len(attached) * 3), (attached.ravel(), np.roll(attached, 1, axis=1).ravel())),
                       shape=(len(everything), len(everything)))
    _, component = connected_components(graph, directed=False)
    pieces = [np.isin(component[attached[:, 0]], [c]) for c in np.unique(component[attached[:, 0]])]
    assert len(pieces) == 3
    skull = ~head.attached
    for part in [skull] + pieces:  # each closed surface faces out
        faces_of = head.faces[skull] if part is skull else attached[part]
        corners = everything[faces_of]
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        centre = everything[np.unique(faces_of)].mean(axis=0)
        assert ((normals * (corners.mean(axis=1) - centre)).sum(axis=1) > 0).mean() > 0.97
    neck = everything[np.unique(max((attached[part] for part in pieces), key=len))]
    skull_x = everything[np.unique(head.faces[skull])][:, 0]
    ears = [everything[np.unique(attached[part])] for part in pieces if attached[part].size < neck.size]
    assert sorted(np.sign(ear[:, 0].mean()) for ear in ears) == [-1, 1]  # one each side, standing out
    assert all(np.abs(ear[:, 0]).max() > np.abs(skull_x).max() for ear in ears)
    chin, face_height = shape[152], shape[10, 1] - shape[152, 1]
    assert neck[:, 1].min() < chin[1] - face_height and neck[:, 1].max() > chin[1]  # from below the chin into the skull
    assert neck[:, 2].max() < chin[2]  # behind the chin
    face_depth = shape[:, 2].max() - shape[:, 2].min()
    assert head.vertices[:, 2].min() < shape[:, 2].min() - face_depth  # the skull goes well behind the face
    assert head.vertices[:, 1].max() > shape[10, 1]  # the crown rises above the forehead-top landmark
    assert 0.1 < head.hair.mean() < 0.6
    assert head.follow.max() < 1.0 and head.follow[-1] == 0.0 and (head.owner < 468).all()


def test_figure_measures_find_background_enclosed_by_the_head_and_the_faces_outline():
    from tasks.synthesize.checks import figure_measures
    from tasks.synthesize.labels import CLASS_ID

    segmentation = np.zeros((40, 40), np.uint8)
    segmentation[5:35, 5:35] = CLASS_ID["head"]
    segmentation[12:28, 12:28] = CLASS_ID["skin"]
    segmentation[18:20, 14:18] = CLASS_ID["lips"]
    assert figure_measures(segmentation) == (0, 1.0)  # the head all round: nothing enclosed
    segmentation[8:10, 8:11] = CLASS_ID["background"]  # a gap between mask and skull
    assert figure_measures(segmentation)[0] == 6
    segmentation[12:28, 28:35] = CLASS_ID["background"]  # the right cheek against the background: open to the edge
    enclosed, share = figure_measures(segmentation)
    assert enclosed == 6 and 0.6 < share < 0.9, share
    assert figure_measures(np.zeros((8, 8), np.uint8)) == (0, 0.0)  # no face at all


def test_the_label_suite_passes_good_labels_and_names_each_fault():
    import pandas as pd

    from stores.expectations import LabelRequirements, validate_synthetic_labels
    from tasks.synthesize.labels import SEGMENTATION_CLASSES

    needs = LabelRequirements(resolution=64, yaw=(-40.0, 40.0), pitch=(-20.0, 20.0), classes=SEGMENTATION_CLASSES)
    n = 20
    good = pd.DataFrame({"visible_outside": np.zeros(n, int), "pixel_std": np.full(n, 30.0),
                         "hidden_on_surface_excess": np.full(n, -10.0), "enclosed_background": np.zeros(n, int),
                         "yaw_deg": np.linspace(-39, 39, n), "pitch_deg": np.linspace(-19, 19, n),
                         **{f"pixels_{name}": np.full(n, 10) for name in SEGMENTATION_CLASSES}})
    assert validate_synthetic_labels(good, needs) == []
    bad = good.copy()
    bad.loc[3, "visible_outside"] = 2
    bad.loc[5, "pixel_std"] = 0.0
    bad.loc[6, "hidden_on_surface_excess"] = 40.0
    bad.loc[7, "enclosed_background"] = 12
    bad["pixels_lips"] = 0
    bad["yaw_deg"] = np.linspace(-39, 0, n)
    failed = validate_synthetic_labels(bad, needs)
    assert failed == ["a visible landmark lies outside the image (1 images)", "an image is blank (grey-level spread under 2) (1 images)",
                      "landmarks marked hidden lie on the rendered surface at their own depth (their visibility is wrong) "
                      "(1 images)",
                      "background shows through the head (a hole between the face and the head, or under the chin) "
                      "(1 images)",
                      "no image shows the segmentation class 'lips'",
                      "no image turns the head near the high end of the yaw range (40 deg)"], failed
    # too few images to judge the pose coverage: only that check is left out
    assert validate_synthetic_labels(bad.iloc[:8], needs) == failed[:5]


def test_images_read_back_alike_from_files_and_from_the_image_array(tmp_path):
    from stores.synthetic_store import DataSetMismatch, SyntheticStore

    renders = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    settings = {"n_samples": 4, "chunk": 2}
    in_array = SyntheticStore(tmp_path / "array")
    in_array.create(4, 2, {"rendered": ((), "bool")}, settings, image_shape=(8, 8, 3))
    in_array.put_image_rows(2, renders[2:])  # the second shard's chunk only
    np.testing.assert_array_equal(in_array.read_image("images.zarr/3"), renders[3])
    assert not in_array.read_image("images.zarr/0").any()  # not rendered yet: zeros
    in_array.create(4, 2, {"rendered": ((), "bool")}, settings, image_shape=(8, 8, 3))  # a resumed run keeps them
    np.testing.assert_array_equal(in_array.read_image("images.zarr/2"), renders[2])
    in_files = SyntheticStore(tmp_path / "files")
    in_files.create(4, 2, {"rendered": ((), "bool")}, settings)
    Image.fromarray(renders[1]).save(tmp_path / "one.png")
    in_files.put_images({"one.png": tmp_path / "one.png"})
    np.testing.assert_array_equal(in_files.read_image("images/one.png"), renders[1])
    with pytest.raises(DataSetMismatch, match="other settings \\(chunk\\)"):
        in_files.check_settings({"n_samples": 4, "chunk": 4})
