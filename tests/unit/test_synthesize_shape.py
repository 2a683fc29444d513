"""The face-shape model of synthetic identities: symmetric PCA of aligned landmark shapes, offsets at
each face's own scale and rotation, and a rig whose mesh takes them while its texture stays put."""

from __future__ import annotations

import numpy as np

from tasks.reconstruct.canonical_shape import load_canonical_shape
from tasks.reconstruct.eyes import EYEBALL_PARTS
from tasks.reconstruct.rig import build_face_rig, landmarks_to_world
from tasks.reconstruct.topology import N_LANDMARKS
from tasks.synthesize.shape import (ShapeModel, draw_shape_coefficients, fit_shape_model, mirror_index,
                                    load_shape_model, rigid_groups, shape_model_record,
                                    shape_offset_px,
                                    symmetric_part)
from tests.unit.test_reconstruct_rig import SIZE, crop_image, synthetic_landmarks

NOSE_TIP, IRIS_CENTRES = 1, (468, 473)


def test_every_landmark_has_one_mirror_partner():
    partner = mirror_index()
    np.testing.assert_array_equal(partner[partner], np.arange(N_LANDMARKS))
    assert partner[NOSE_TIP] == NOSE_TIP and partner[IRIS_CENTRES[0]] == IRIS_CENTRES[1]
    canonical = load_canonical_shape()  # unit inter-ocular distance
    np.testing.assert_allclose(canonical[partner] * [-1, 1, 1], canonical, atol=0.02)


def training_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical faces made wider or narrower (symmetric) and skewed by depth as a turned head is
    (antisymmetric), each under a random similarity; returns landmarks and both amounts."""
    rng = np.random.default_rng(seed)
    canonical = load_canonical_shape()
    widen, turn = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    faces = []
    for a, b in zip(widen, turn):
        xy = canonical[:, :2].copy()
        xy[:, 0] = xy[:, 0] * (1 + 0.15 * a) + 0.3 * b * canonical[:, 2]
        angle, scale = rng.uniform(-0.3, 0.3), rng.uniform(20, 60)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        faces.append(xy @ rotation.T * scale + rng.uniform(50, 150, 2))
    return np.stack(faces), widen, turn


def test_the_model_keeps_proportions_and_drops_the_turn_of_the_head():
    faces, widen, turn = training_faces(40)
    model = fit_shape_model(faces, components=4)
    assert model.components.shape == (4, N_LANDMARKS, 2) and model.n_faces == 40
    flat = model.components.reshape(4, -1)  # signs fixed: each component's largest entry is positive
    assert (flat[np.arange(4), np.abs(flat).argmax(axis=1)] > 0).all()
    basis = model.components.reshape(4, -1)
    np.testing.assert_allclose(basis @ basis.T, np.eye(4), atol=1e-9)
    assert model.deviations[1] < 0.06 * model.deviations[0]  # one real mode: the width
    from tasks.quality.metrics import normalised_shape

    shapes = symmetric_part(np.stack([normalised_shape(face).reshape(N_LANDMARKS, 2) for face in faces]))
    scores = (shapes - model.mean).reshape(40, -1) @ basis[0]
    assert abs(np.corrcoef(scores, widen)[0, 1]) > 0.99
    # How much of the first component each amount explains (they are drawn apart, not orthogonal).
    (by_width, by_turn, _), *_ = np.linalg.lstsq(np.stack([widen, turn, np.ones(40)], axis=1), scores, rcond=None)
    assert abs(by_turn) < 0.01 * abs(by_width)
    # Without symmetrising, the turn is a mode of its own: the symmetric part is what removes it.
    raw = np.stack([normalised_shape(face).reshape(N_LANDMARKS, 2) for face in faces])
    singular = np.linalg.svd((raw - raw.mean(axis=0)).reshape(40, -1), compute_uv=False)
    assert singular[1] / np.sqrt(39) > 3 * model.deviations[1]


def test_offsets_follow_the_face_size_and_rotation_and_stay_symmetric():
    faces, _, _ = training_faces(30, seed=1)
    model = fit_shape_model(faces, components=3)
    face = synthetic_landmarks(scale=24.0)
    assert not shape_offset_px(face, model, np.zeros(3)).any()
    coefficients = np.array([1.5, -0.5, 0.0])
    offset = shape_offset_px(face, model, coefficients)
    assert offset.shape == (N_LANDMARKS, 3) and not offset[:, 2].any()
    assert 0.2 < np.abs(offset[:, :2]).max() < 10  # pixels on a face 24 pixels between the eyes
    bigger = shape_offset_px(synthetic_landmarks(scale=48.0, angle_degrees=30.0), model, coefficients)
    angle = np.radians(-30.0)  # image y points down, so a roll of +30° turns pixel vectors by −30°
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    np.testing.assert_allclose(bigger[:, :2], 2 * offset[:, :2] @ rotation.T, atol=0.05)
    # The mouth's and the eyes' openings are kept: their groups move rigidly.
    for group in rigid_groups():
        np.testing.assert_allclose(offset[group], offset[group][:1].repeat(len(group), axis=0), atol=1e-5)
    partner = mirror_index()  # a symmetric model moves both sides alike (the canonical face is symmetric to 1%)
    tolerance = 0.05 * np.abs(offset).max()
    np.testing.assert_allclose(offset[partner, 0], -offset[:, 0], atol=tolerance)
    np.testing.assert_allclose(offset[partner, 1], offset[:, 1], atol=tolerance)


def test_coefficients_are_seeded_per_identity_clipped_and_scaled():
    model = ShapeModel(mean=np.zeros((N_LANDMARKS, 2)), components=np.zeros((5, N_LANDMARKS, 2)),
                       deviations=np.ones(5), n_faces=10)
    first = draw_shape_coefficients(3, 7, model, 1.0)
    np.testing.assert_array_equal(first, draw_shape_coefficients(3, 7, model, 1.0))
    assert not np.array_equal(first, draw_shape_coefficients(3, 8, model, 1.0))
    draws = np.stack([draw_shape_coefficients(0, k, model, 2.0) for k in range(400)])
    assert np.abs(draws).max() <= 2.5 and (np.abs(draws) == 2.5).any()
    assert 0.45 < np.std(np.stack([draw_shape_coefficients(0, k, model, 0.5) for k in range(400)])) < 0.55


def test_a_shaped_rig_moves_its_mesh_and_keeps_its_texture_on_the_features():
    crop, landmarks = crop_image(), synthetic_landmarks()
    faces, _, _ = training_faces(30, seed=2)
    offset = shape_offset_px(landmarks, fit_shape_model(faces, components=2), np.array([2.0, 0.0]))
    plain = build_face_rig(crop, landmarks)
    shaped = build_face_rig(crop, landmarks, shape_offset_px=offset)
    moved = (shaped.vertices[:N_LANDMARKS] - shaped.rest_offset) - (plain.vertices[:N_LANDMARKS] - plain.rest_offset)
    expected = landmarks_to_world(landmarks + offset, SIZE) - landmarks_to_world(landmarks, SIZE)
    np.testing.assert_allclose(moved, expected, atol=1e-5)
    assert np.abs(moved).max() > 1e-3
    np.testing.assert_array_equal(shaped.uv_photo[:N_LANDMARKS], plain.uv_photo[:N_LANDMARKS])
    np.testing.assert_array_equal(shaped.texture, plain.texture)
    np.testing.assert_array_equal(shaped.landmarks_px, plain.landmarks_px)
    # The eyeballs follow the eyes they sit in.
    eyes = np.isin(shaped.parts, list(EYEBALL_PARTS.values()))
    assert eyes.any() and not np.allclose(shaped.vertices[eyes], plain.vertices[eyes])


def test_no_training_faces_means_no_shape_model(tmp_path):
    record = shape_model_record(str(tmp_path), 1.0)
    assert record == {"data_sets": [], "faces": 0, "fingerprints": []}
    assert load_shape_model(str(tmp_path), record, 8) is None
    assert not (tmp_path / "datasets.zarr").exists()  # looking did not create the store


def test_the_model_is_fitted_to_the_data_dirs_training_faces(tmp_path):
    from stores.dataset_store import DatasetStore
    from tasks.dataset.build import FaceDataset

    faces, _, _ = training_faces(12, seed=3)
    dataset = FaceDataset(crops={32: np.zeros((12, 32, 32, 3), np.uint8)}, uv_textures=np.zeros((12, 8, 8, 3), np.uint8),
                          landmarks=faces.astype(np.float32), labels=["sample"] * 12, sources=[f"f{k}" for k in range(12)])
    DatasetStore(str(tmp_path / "datasets.zarr")).write("faces", dataset, {"fingerprint": "f1"})
    record = shape_model_record(str(tmp_path), 1.0)
    assert record == {"data_sets": ["faces"], "faces": 12, "fingerprints": ["f1"]}
    assert shape_model_record(str(tmp_path), 0.0) == {"data_sets": [], "faces": 0, "fingerprints": []}
    model = load_shape_model(str(tmp_path), record, 4)
    assert model is not None and model.n_faces == 12 and len(model.deviations) == 4
    np.testing.assert_allclose(model.deviations, fit_shape_model(faces, 4).deviations, rtol=1e-4)  # stored as float32
    assert load_shape_model(str(tmp_path), record, 12) is None  # as many components as faces: too few


def test_a_data_set_keeps_the_shape_model_its_coefficients_refer_to(tmp_path):
    from stores.synthetic_store import SyntheticStore
    from tasks.synthesize.shape import store_shape_model, stored_shape_model

    store = SyntheticStore(tmp_path / "set")
    assert stored_shape_model(store) is None  # faces not moved: nothing stored
    faces, _, _ = training_faces(12, seed=3)
    model = fit_shape_model(faces, components=4)
    record = {"data_sets": ["faces"], "faces": 12, "fingerprints": ["f1"]}
    store_shape_model(store, model, record)
    store_shape_model(store, model, record)  # a resumed run writes it again
    kept = stored_shape_model(store)
    assert kept is not None and kept.n_faces == 12
    for field in ("mean", "components", "deviations"):
        np.testing.assert_array_equal(getattr(kept, field), getattr(model, field))
    landmarks = faces[0][:, :2] * 3.0  # a face at its own size: the offsets follow from the stored model alone
    coefficients = np.array([1.5, -1.0, 0.0, 0.5])
    np.testing.assert_array_equal(shape_offset_px(landmarks, kept, coefficients),
                                  shape_offset_px(landmarks, model, coefficients))
    assert store.read_shape_model()[1]["data_sets"] == ["faces"]


def test_the_photo_fades_into_the_head_skin_at_the_face_edge():
    from tasks.reconstruct.topology import face_topology
    from tasks.synthesize.head import feather_face_edge, srgb_to_linear

    landmarks = synthetic_landmarks(scale=24.0)
    texture = np.zeros((SIZE + SIZE // 8, SIZE, 3), np.uint8)
    texture[:] = (200, 40, 40)
    skin = np.array([90.0, 160.0, 60.0])
    feathered = feather_face_edge(texture, landmarks, skin, width_px=6.0)
    np.testing.assert_array_equal(feathered[SIZE:], texture[SIZE:])  # the patch band is left alone
    edge = np.rint(landmarks[face_topology().face_oval[0], :2]).astype(int)  # on the oval: skin
    np.testing.assert_allclose(feathered[edge[1], edge[0]], skin, atol=40)
    nose = np.rint(landmarks[1, :2]).astype(int)  # well inside: the photo
    np.testing.assert_array_equal(feathered[nose[1], nose[0]], texture[nose[1], nose[0]])
    np.testing.assert_array_equal(feathered[0, 0], skin)  # outside the oval (texture filtering reaches it): skin
    np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 255.0, 188.0])), [0.0, 1.0, 0.5], atol=0.01)
