"""Face alignment, source discovery and balanced sampling of the dataset builder."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.dataset.align import IRIS_CENTRES, align_face, alignment_template, apply_affine, fit_similarity
from tasks.dataset.build import canonical_unwrap_mesh, plan_items
from tasks.dataset.config import DatasetConfig
from tasks.dataset.sources import Source, balanced_weights, find_sources, label_from_name


def _similarity(scale, angle, shift):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def test_fit_similarity_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 2)) * 30
    truth = _similarity(1.7, 0.6, (3.0, -2.0))
    fitted = fit_similarity(src, apply_affine(truth, src))
    np.testing.assert_allclose(fitted, truth, atol=1e-10)


def test_fit_similarity_never_reflects():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 2))
    mirrored = src * np.array([-1.0, 1.0])
    fitted = fit_similarity(src, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0


def test_template_puts_eyes_at_the_configured_height_and_centre():
    template = alignment_template(128, face_scale=0.72, eye_height=0.4)
    eyes = template[list(IRIS_CENTRES)].mean(axis=0)
    np.testing.assert_allclose(eyes, [64.0, 0.4 * 128], atol=1e-9)
    assert template[152, 1] - template[10, 1] == pytest.approx(0.72 * 128)  # chin below forehead
    assert template[33, 0] < template[263, 0]  # subject's right eye on the image's left
    np.testing.assert_allclose(alignment_template(64), alignment_template(128) / 2)


def test_align_face_maps_synthetic_landmarks_onto_the_template():
    size = 64
    template = alignment_template(size)
    # A face 1.6× larger than the crop's, rotated and shifted inside a 200² image.
    to_source = _similarity(1.6, -0.3, (40.0, 30.0))
    landmarks = apply_affine(to_source, template)
    image = np.zeros((200, 200, 3), np.uint8)
    for index in IRIS_CENTRES:  # bright dots on the irises
        x, y = landmarks[index]
        image[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 255
    aligned = align_face(image, landmarks, size, template)
    assert aligned.crop.shape == (size, size, 3) and aligned.crop.dtype == np.uint8
    np.testing.assert_allclose(aligned.landmarks, template, atol=1e-6)
    np.testing.assert_allclose(aligned.matrix @ np.append(landmarks[0], 1.0), template[0], atol=1e-6)
    for index in IRIS_CENTRES:
        x, y = np.floor(template[index]).astype(int)
        assert aligned.crop[y, x].min() > 128
    assert aligned.crop[5, 5].max() == 0


def test_balanced_weights_give_each_label_equal_total_weight():
    labels = ["a"] * 10 + ["b"] * 2 + ["c"]
    weights = balanced_weights(labels)
    assert weights.sum() == pytest.approx(1.0)
    for label in "abc":
        assert weights[[l == label for l in labels]].sum() == pytest.approx(1 / 3)


def test_balanced_sampling_draws_labels_evenly():
    sources = [Source(f"/f/{i}.jpg", "image", "big") for i in range(900)]
    sources += [Source(f"/g/{i}.jpg", "image", "small") for i in range(100)]
    items = plan_items(sources, DatasetConfig(max_images=100, seed=3))
    small = sum(item.source.label == "small" for item in items)
    assert len(items) == 100 and 35 <= small <= 65
    assert items == plan_items(sources, DatasetConfig(max_images=100, seed=3))


def test_label_from_name():
    assert label_from_name("/x/female_asian_0151d729-b9ec-49ac-a272-5a33856ad85b.jpg") == "female_asian"
    assert label_from_name("male_white_018e8a47-38a5-4a89-8697-dfb918ddf066.png") == "male_white"
    assert label_from_name("/data/portraits/sfhq_pt1_00000058.jpg") == "portraits"
    assert label_from_name("/data/video/lp_d0.mp4") == "video"
    assert label_from_name("/data/portraits/female_asian.jpg") == "portraits"


def test_find_sources_walks_folders_and_manifests(tmp_path):
    (tmp_path / "faces" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.PNG", "sub/c.mp4", "notes.txt"):
        (tmp_path / "faces" / name).write_bytes(b"x")
    (tmp_path / "list.csv").write_text("id,portrait\none,faces/a.jpg\ntwo,faces/sub/c.mp4\n")
    found = find_sources([str(tmp_path / "faces"), str(tmp_path / "list.csv")])
    assert [(s.kind, s.label) for s in found] == [("image", "faces"), ("image", "sub"), ("video", "sub")]
    assert find_sources([str(tmp_path / "list.csv")])[1].path == str(tmp_path / "faces" / "sub" / "c.mp4")


def test_find_sources_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        find_sources([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match="holds no images"):
        find_sources([str(tmp_path / "empty")])
    (tmp_path / "bad.csv").write_text("id,picture\n1,a.jpg\n")
    with pytest.raises(ValueError, match="bad.csv"):
        find_sources([str(tmp_path / "bad.csv")])


@pytest.mark.parametrize("field, value", [("crop_sizes", (64, 8)), ("crop_sizes", (64, 64)), ("uv_size", 8),
                                          ("face_scale", 1.5), ("video_frame_stride", 0), ("max_images", 0),
                                          ("min_detection_confidence", 1.0)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        DatasetConfig(**{field: value})


def test_align_face_repeats_edges_outside_the_image():
    # A face as large as the whole image: the crop's margins reach outside it.
    template = alignment_template(64)
    image = np.full((40, 40, 3), 90, np.uint8)
    image[:, :20] = 200
    landmarks = apply_affine(_similarity(0.8, 0.0, (-6.0, -6.0)), template)  # crop spans -6..45 px
    crop = align_face(image, landmarks, 64, template).crop
    assert set(np.unique(crop[:, :3])) == {200} and set(np.unique(crop[:, -3:])) == {90}


def test_build_counts_unreadable_files_and_images_without_faces(tmp_path):
    from PIL import Image

    from tasks.dataset.build import build_face_dataset

    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    noise = np.random.default_rng(4).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    dataset = build_face_dataset(find_sources([str(tmp_path)]), DatasetConfig(crop_sizes=(32, 64), uv_size=32))
    assert len(dataset) == 0 and dataset.skipped == {"no_face": 1, "unreadable": 2}
    assert dataset.crops[32].shape == (0, 32, 32, 3) and dataset.uv_textures.shape == (0, 32, 32, 3)
