"""`avatarflow synthesize` for real: a 20-image data set of 5 portraits' faces on a LocalCluster,
its labels checked, resumed after a lost shard, and read back by MediaPipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from PIL import Image

from infra.prefect_server import stop_server
from stores.synthetic_store import SyntheticStore
from tasks.synthesize.checks import landmark_agreement
from tests.conftest import REPO, free_port, sample

pytestmark = pytest.mark.flow

PORTRAITS = ("sfhq_pt1_00000058.jpg", "sfhq_pt1_00000471.jpg", "sfhq_pt2_00000258.jpg", "sfhq_pt2_00000943.jpg",
             "sfhq_pt2_00001286.jpg")
OPTIONS = ["--samples-per-identity", "4", "--resolution", "256", "--cycles-samples", "2", "--samples-per-shard", "8",
           "--seed", "5", "--name", "small"]


def synthesize(portraits: Path, data_dir: Path, *options: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    try:
        return subprocess.run([sys.executable, "-m", "avatarflow.cli", "synthesize", "--portraits", str(portraits),
                               "--data-dir", str(data_dir), "--prefect-port", str(free_port()), *options],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    finally:
        stop_server(data_dir / "prefect")


@pytest.fixture(scope="module")
def data_set(tmp_path_factory):
    work = tmp_path_factory.mktemp("synthesize")
    portraits = work / "portraits"
    portraits.mkdir()
    for name in PORTRAITS:  # copies: a symlink's source would be the shared folder, with its own provenance
        (portraits / name).write_bytes(sample("portraits", name).read_bytes())
    (portraits / "PROVENANCE.md").write_text("Five portraits from the shared samples, for a test.\n")
    data_dir = work / "data"
    first = synthesize(portraits, data_dir, *OPTIONS)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return {"portraits": portraits, "data_dir": data_dir, "first": first,
            "store": SyntheticStore(data_dir / "synthetic" / "small")}


def test_the_data_set_has_every_label_and_passes_its_checks(data_set):
    store, first = data_set["store"], data_set["first"]
    assert f"data set: {store.root.url}" in first.stdout
    assert "images/hour" in first.stdout + first.stderr  # progress and throughput while it runs
    index = store.index()
    assert len(index) == 20 and list(index["sample"]) == list(range(20))
    assert index.groupby("identity")["split"].nunique().max() == 1  # an identity never spans two splits
    assert set(index["split"]) <= {"train", "val", "test"}
    labels = zarr.open_group(store.root.local_path / "labels.zarr", mode="r")
    assert labels["landmarks_2d"].shape == (20, 478, 2) and labels["landmarks_3d"].shape == (20, 478, 3)
    assert labels["depth"].shape == (20, 256, 256) and labels["normals"].shape == (20, 256, 256, 3)
    assert labels["segmentation"].shape == (20, 256, 256) and labels["weights"].shape == (20, 52)
    assert labels["camera/intrinsics"].shape == (20, 3, 3) and labels["camera/extrinsics"].shape == (20, 3, 4)
    assert labels["landmarks_2d"].chunks[0] == 8  # one shard's samples per chunk
    assert np.asarray(labels["rendered"]).all()
    summary = labels.attrs["summary"]
    assert summary["images"] == 20 and summary["failed_checks"] == [] and summary["identities"] == 5
    assert labels.attrs["segmentation_classes"][0] == "background"
    # head or hair meets most of every face's outline (the rest is its silhouette: a profile, a far cheek)
    assert summary["head_border_share"]["min"] > 0.45, summary["head_border_share"]
    assert store.read_shape_model() is None  # no training faces in this data dir: shapes as reconstructed
    for image in index["image"]:
        with Image.open(store.root.local_path / image) as picture:
            assert picture.size == (256, 256)


def test_a_lost_shard_is_rendered_again_and_nothing_else(data_set):
    store = data_set["store"]
    index = store.index()
    labels = zarr.open_group(store.root.local_path / "labels.zarr", mode="r")
    before = {name: np.asarray(labels[name]) for name in ("landmarks_2d", "visible", "segmentation")}
    record = json.loads(store.shard_record(1).read_text())
    lost = [row["image"] for row in record["rows"]]
    store.shard_record(1).remove()
    kept = {image: (store.root.local_path / image).stat().st_mtime_ns for image in index["image"] if image not in lost}
    pixels = {image: np.asarray(Image.open(store.root.local_path / image)) for image in lost}
    for image in lost:
        (store.root.local_path / image).unlink()

    again = synthesize(data_set["portraits"], data_set["data_dir"], *OPTIONS)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "2 already done" in again.stdout + again.stderr
    assert all((store.root.local_path / image).stat().st_mtime_ns == mtime for image, mtime in kept.items())
    labels = zarr.open_group(store.root.local_path / "labels.zarr", mode="r")
    for name, values in before.items():
        np.testing.assert_array_equal(np.asarray(labels[name]), values)
    for image, old in pixels.items():  # the same seed draws and renders the same scene
        assert np.abs(np.asarray(Image.open(store.root.local_path / image)).astype(int) - old).mean() < 1.0
    pd.testing.assert_frame_equal(store.index(), index)


def test_mediapipe_reads_the_renders_where_the_labels_put_the_face(data_set):
    store = data_set["store"]
    index = store.index()
    agreement = landmark_agreement(store, index, max_abs_yaw=30.0)
    assert len(agreement) >= 8
    assert agreement["face_found"].mean() >= 0.75
    error = float(agreement["error_iod"].median())
    # The trivial answer: another image's landmarks. MediaPipe must be far closer than that.
    labels = store.labels()
    baseline = []
    for sample_id in agreement["sample"]:
        truth, other = labels["landmarks_2d"][int(sample_id)], labels["landmarks_2d"][(int(sample_id) + 7) % 20]
        baseline.append(np.linalg.norm(truth - other, axis=1).mean() / np.linalg.norm(truth[33] - truth[263]))
    assert error < 0.12 and error < 0.3 * float(np.median(baseline)), (error, np.median(baseline))


def test_other_settings_in_the_same_folder_and_bad_folders_are_one_line_errors(data_set, tmp_path):
    changed = synthesize(data_set["portraits"], data_set["data_dir"], *OPTIONS[:-2], "--resolution", "128",
                         "--name", "small")
    assert changed.returncode == 2 and "other settings (" in changed.stderr and "Traceback" not in changed.stderr
    missing = synthesize(tmp_path / "nowhere", data_set["data_dir"])
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "is not a folder" in missing.stderr


def test_the_data_set_card_shows_distributions_samples_and_provenance(data_set):
    store = data_set["store"]
    done = subprocess.run([sys.executable, "-m", "avatarflow.cli", "dataset-card", store.root.url], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    card = (store.root.local_path / "card.md").read_text()
    assert "20 images of 5 identities at 256²" in card
    assert "> Five portraits from the shared samples, for a test." in card  # where the identities came from
    assert "sfhq_pt1_00000058.jpg" in card and "label checks: all passed" in card
    assert "share of the face's outline that meets head or hair" in card
    with Image.open(store.root.local_path / "card_grid.png") as grid:
        assert grid.width == 4 * 192 and grid.height == 4 * 192  # 8 samples: render and segmentation, 2 per row
    refused = subprocess.run([sys.executable, "-m", "avatarflow.cli", "dataset-card", str(store.root.local_path / "images")],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "not a finished synthetic data set" in refused.stderr
