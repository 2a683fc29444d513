"""The dataset builder on real files: synthetic faces, portraits and a talking-face video."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stores.dataset_store import DatasetStore
from tasks.dataset.align import IRIS_CENTRES, alignment_template
from tasks.dataset.build import build_face_dataset
from tasks.dataset.config import DatasetConfig
from tasks.dataset.detect import FaceMeshDetector
from tasks.dataset.sources import find_sources, sources_fingerprint
from tasks.quality.metrics import evaluate_faces, normalised_shape
from tests.conftest import SAMPLES, sample

FACES128 = SAMPLES.parent / "faces128"
LABELS = ("female_asian", "female_black", "female_latino", "female_white", "male_asian", "male_black",
          "male_latino", "male_white")


@pytest.fixture(scope="module")
def source_folder(tmp_path_factory):
    if not FACES128.is_dir():
        pytest.skip("shared faces128 set is not available")
    folder = tmp_path_factory.mktemp("faces")
    (folder / "faces128").mkdir()
    for label in LABELS:
        first = sorted(FACES128.glob(f"{label}_*.jpg"))[0]
        (folder / "faces128" / first.name).symlink_to(first)
    (folder / "portraits").mkdir()
    for name in ("sfhq_pt1_00000058.jpg", "lp_s9_mona_lisa.jpg"):
        (folder / "portraits" / name).symlink_to(sample("portraits", name))
    (folder / "video").mkdir()
    (folder / "video" / "lp_d20.mp4").symlink_to(sample("video", "lp_d20.mp4"))
    return folder


@pytest.fixture(scope="module")
def built(source_folder):
    config = DatasetConfig(video_frame_stride=5, max_frames_per_video=5)
    sources = find_sources([str(source_folder)])
    calls = []
    dataset = build_face_dataset(sources, config, progress=lambda done, total: calls.append((done, total)))
    return sources, config, dataset, calls


def test_builds_aligned_crops_and_uv_textures(built):
    sources, config, dataset, calls = built
    assert len(sources) == 11
    attempted = len(dataset) + sum(dataset.skipped.values())
    assert attempted == 15 and calls[-1] == (15, 15)
    assert len(dataset) >= 0.9 * attempted
    n = len(dataset)
    assert dataset.crops[64].shape == (n, 64, 64, 3) and dataset.crops[128].shape == (n, 128, 128, 3)
    assert dataset.uv_textures.shape == (n, 128, 128, 3) and dataset.landmarks.shape == (n, 478, 2)
    assert set(dataset.labels) == set(LABELS) | {"portraits", "video"}
    assert sum(s.endswith(("#0", "#5", "#10", "#15", "#20")) for s in dataset.sources) == dataset.labels.count("video")
    # The 64² crop is the 128² crop downsized.
    small = dataset.crops[128].reshape(n, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    assert np.abs(small - dataset.crops[64]).mean() < 6


def test_aligned_crops_put_the_eyes_on_the_template(built):
    _, config, dataset, _ = built
    template = alignment_template(128, config.face_scale, config.eye_height)
    errors, eye_errors = [], []
    with FaceMeshDetector() as detector:
        for crop in dataset.crops[128]:
            points = detector.detect(crop)
            assert points is not None
            errors.append(np.linalg.norm(points[:, :2] - template, axis=1).mean())
            eye_errors.append(np.linalg.norm(points[list(IRIS_CENTRES), :2] - template[list(IRIS_CENTRES)],
                                             axis=1).mean())
    assert np.mean(eye_errors) < 3.0  # pixels of 128
    assert np.mean(errors) < 4.0


def test_dataset_store_round_trip(built, tmp_path):
    sources, config, dataset, _ = built
    fingerprint = sources_fingerprint(sources, {"crop_sizes": config.crop_sizes})
    store = DatasetStore(str(tmp_path / "datasets.zarr"))
    assert not store.exists("faces", fingerprint)
    store.write("faces", dataset, {"fingerprint": fingerprint, "config": {"uv_size": config.uv_size}})
    reopened = DatasetStore(str(tmp_path / "datasets.zarr"))
    assert reopened.exists("faces", fingerprint) and not reopened.exists("faces", "other")
    for size in (64, 128):
        np.testing.assert_array_equal(reopened.read_crops("faces", size), dataset.crops[size])
    np.testing.assert_array_equal(reopened.read_uv("faces"), dataset.uv_textures)
    np.testing.assert_array_equal(reopened.read_landmarks("faces"), dataset.landmarks)
    assert reopened.read_labels("faces") == dataset.labels
    assert reopened.read_sources("faces") == dataset.sources
    attrs = reopened.attrs("faces")
    assert attrs["label_counts"] == dataset.label_counts() and attrs["source_count"] == 11
    assert attrs["complete"] is True and attrs["config"] == {"uv_size": 128}


def test_quality_of_real_crops_against_their_own_shapes(built):
    _, _, dataset, _ = built
    reference = np.stack([normalised_shape(points) for points in dataset.landmarks])
    quality = evaluate_faces(dataset.crops[64], reference, components=8)
    assert quality.n == len(dataset) and quality.face_rate >= 0.9
    noise = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    assert evaluate_faces(noise, reference).face_rate == 0.0
    # The same faces stretched sideways by a third lie farther from the dataset's shapes.
    stretched = np.stack([np.asarray(Image.fromarray(crop[:, 8:56]).resize((64, 64), Image.BICUBIC))
                          for crop in dataset.crops[64]])
    stretched_quality = evaluate_faces(stretched, reference, components=8)
    assert stretched_quality.face_rate >= 0.9
    assert 3 * quality.landmark_frechet < stretched_quality.landmark_frechet
