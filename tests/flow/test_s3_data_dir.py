"""The production flow with `--data-dir s3://…`: moto's S3 server on 127.0.0.1 stands in for the
object store. The manifest is a URL in the bucket, and so are the portraits: one beside the
manifest under the data dir, named by a relative path, one under an `--input-root` URL.
Everything shared lands in the bucket: the Zarr store, the outputs, the MLflow artifacts and the
run lock; nothing lands in a local data dir."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infra.prefect_server import stop_server
from tests.conftest import free_port

pytestmark = pytest.mark.flow

BUCKET = "avatarflow-test"
DATA_URL = f"s3://{BUCKET}/data"
PORTRAITS_URL = f"s3://{BUCKET}/portraits"
MANIFEST_URL = f"{DATA_URL}/uploads/nightly.csv"


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avatarflow.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1500)


@pytest.fixture(scope="module")
def s3():
    """An S3 server in this process, and the environment that points boto3 and s3fs at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    environment = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield environment
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def bucket(s3):
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture(scope="module")
def produced(s3, bucket, tmp_path_factory):
    from PIL import Image
    from skimage import data

    work = tmp_path_factory.mktemp("s3flow")
    portrait = io.BytesIO()
    Image.fromarray(data.astronaut()).save(portrait, format="PNG")
    bucket.pipe_file(f"{BUCKET}/data/uploads/astronaut.png", portrait.getvalue())
    bucket.pipe_file(f"{BUCKET}/portraits/astronaut.png", portrait.getvalue())
    bucket.pipe_file(f"{BUCKET}/private/astronaut.png", portrait.getvalue())
    manifest = io.StringIO(newline="")
    writer = csv.writer(manifest)
    writer.writerow(["id", "portrait", "text", "resolution"])
    writer.writerow(["uploaded", "./astronaut.png", "Hello there.", "128"])  # beside the manifest
    writer.writerow(["rooted", f"{PORTRAITS_URL}/astronaut.png", "Hi again.", "128"])
    writer.writerow(["private", f"s3://{BUCKET}/private/astronaut.png", "Not allowed.", "128"])
    bucket.pipe_file(MANIFEST_URL.removeprefix("s3://"), manifest.getvalue().encode("utf-8"))
    (work / "tmp").mkdir()
    environment = {**os.environ, **s3, "AVATARFLOW_HOME": str(work / "home"), "TMPDIR": str(work / "tmp"),
                   "AVATARFLOW_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    args = ["produce", MANIFEST_URL, "--data-dir", DATA_URL, "--input-root", PORTRAITS_URL,
            "--prefect-port", str(free_port())]
    try:
        first = run_cli(*args, cwd=work, env=environment)
        second = run_cli(*args, cwd=work, env=environment)
    finally:
        stop_server(work / "home" / "prefect")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summaries = bucket.glob(f"{BUCKET}/data/outputs/*/summary.json")
    assert len(summaries) == 1, summaries
    summary = json.loads(bucket.cat_file(summaries[0]))
    yield {"work": work, "first": first, "second": second, "summary": summary, "run": summary["run"],
           "run_folder": f"{BUCKET}/data/outputs/{summary['run']}", "tracking_uri": f"sqlite:///{work / 'mlflow.db'}"}


def test_outputs_and_reports_are_in_the_bucket(produced, bucket):
    summary, folder = produced["summary"], produced["run_folder"]
    assert "finished: 2 (0 reused)" in produced["first"].stdout
    assert sorted(summary["finished"]) == ["rooted", "uploaded"]
    assert summary["output_folder"] == f"s3://{folder}"
    for avatar in ("uploaded", "rooted"):
        for name in ("talk.mp4", "avatar.glb", "avatar.blend", "poster.png"):
            assert bucket.size(f"{folder}/{avatar}/{name}") > 0, f"{avatar}/{name}"
    for name in ("report.html", "summary.json", "quarantine.csv"):
        assert bucket.size(f"{folder}/{name}") > 0, name
    assert not [path for path in bucket.find(f"{BUCKET}/data") if path.endswith(".partial")]


def test_a_url_outside_the_input_roots_is_quarantined(produced, bucket):
    rows = list(csv.DictReader(io.StringIO(bucket.cat_file(f"{produced['run_folder']}/quarantine.csv").decode())))
    assert [(r["id"], r["stage"], r["error"]) for r in rows] == [
        ("private", "ingest", "astronaut.png: URL is outside the allowed input locations (give its prefix as an input root)")]


def test_the_zarr_store_in_the_bucket_holds_complete_avatars(produced):
    import zarr
    import zarr.storage

    store = zarr.open_group(store=zarr.storage.FsspecStore.from_url(f"{DATA_URL}/avatars.zarr", read_only=True),
                            mode="r")
    for avatar in ("uploaded", "rooted"):
        group = store[f"runs/{produced['run']}/{avatar}"]
        attrs = dict(group.attrs)
        assert attrs["complete"] is True
        assert attrs["outputs"]["video"] == f"s3://{produced['run_folder']}/{avatar}/talk.mp4"
        assert group["animation/weights"].shape[1] == 52
    assert dict(store[f"runs/{produced['run']}/private"].attrs)["complete"] is False


def test_mlflow_artifacts_are_in_the_bucket(produced, bucket):
    import mlflow

    mlflow.set_tracking_uri(produced["tracking_uri"])
    runs = mlflow.search_runs(experiment_names=["avatarflow-produce"], output_format="list")
    first = [r for r in runs if r.data.metrics.get("avatars_reused") == 0]
    assert len(first) == 1, [r.data.metrics for r in runs]
    artifacts = first[0].info.artifact_uri
    assert artifacts.startswith(f"{DATA_URL}/mlartifacts/")
    stored = {path.rsplit("/", 1)[-1] for path in bucket.find(artifacts.removeprefix("s3://"))}
    assert {"report.html", "quarantine.csv", "config.json", "poster.png"} <= stored


def test_the_run_lock_is_released(produced, bucket):
    assert bucket.glob(f"{BUCKET}/data/locks/*") == []


def test_nothing_is_written_to_a_local_data_dir(produced):
    work = produced["work"]
    assert sorted(p.name for p in work.iterdir()) == ["home", "mlflow.db", "mlflow.db.lock", "tmp"]
    assert sorted(p.name for p in (work / "home").iterdir()) == ["prefect"]
    assert not [p for p in (work / "tmp").iterdir() if p.name.startswith("avatarflow-")]  # render scratch is gone


def test_a_rerun_reuses_the_avatars_built_from_url_inputs(produced):
    second = produced["second"]
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "finished: 2 (2 reused)" in second.stdout and "render started" not in second.stdout + second.stderr


def test_a_run_whose_lock_is_held_in_the_bucket_is_refused(s3, bucket, tmp_path):
    from stores.run_lock import acquire_run_lock, release_run_lock
    from tasks.batch.plan import run_name

    manifest_url = f"s3://{BUCKET}/jobs/m.csv"
    bucket.pipe_file(manifest_url.removeprefix("s3://"),
                     f"id,portrait,text\na,{PORTRAITS_URL}/astronaut.png,Hi.\n".encode("utf-8"))
    held = acquire_run_lock(DATA_URL, run_name(manifest_url, "photo"))
    try:
        done = run_cli("produce", manifest_url, "--data-dir", DATA_URL, cwd=tmp_path,
                       env={**os.environ, "AVATARFLOW_HOME": str(tmp_path / "home"),
                            "AVATARFLOW_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    finally:
        release_run_lock(held)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: run 'm-") and "already being produced" in done.stderr
    assert not Path(tmp_path / "home").exists()


def test_a_synthetic_data_set_lives_in_the_bucket(s3, bucket, tmp_path):
    """`synthesize` with portraits and data dir in the bucket, images as a Zarr array: images,
    labels, shard records and index land there, the card is written there, and nothing is left on
    this machine."""
    import pandas as pd
    import zarr
    import zarr.storage

    from tests.conftest import sample

    for name in ("sfhq_pt1_00000058.jpg", "PROVENANCE.md"):
        source = sample("portraits", name) if name.endswith(".jpg") else None
        data = source.read_bytes() if source else b"One portrait, for a test.\n"
        bucket.pipe_file(f"{BUCKET}/faces/{name}", data)
    (tmp_path / "tmp").mkdir()
    environment = {**os.environ, **s3, "AVATARFLOW_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"),
                   "AVATARFLOW_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    try:
        done = run_cli("synthesize", "--portraits", f"s3://{BUCKET}/faces", "--samples-per-identity", "2",
                       "--resolution", "96", "--cycles-samples", "1", "--data-dir", DATA_URL, "--name", "cloud", "--format", "zarr",
                       "--prefect-port", str(free_port()), cwd=tmp_path, env=environment)
        card = run_cli("dataset-card", f"{DATA_URL}/synthetic/cloud", cwd=tmp_path, env=environment)
    finally:
        stop_server(tmp_path / "home" / "prefect")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert card.returncode == 0, card.stdout[-2000:] + card.stderr[-2000:]
    folder = f"{BUCKET}/data/synthetic/cloud"
    index = pd.read_parquet(io.BytesIO(bucket.cat_file(f"{folder}/index.parquet")))
    assert list(index["image"]) == ["images.zarr/0", "images.zarr/1"] and not bucket.exists(f"{folder}/images")
    assert index["source"].tolist() == [f"s3://{BUCKET}/faces/sfhq_pt1_00000058.jpg"] * 2
    labels = zarr.open_group(store=zarr.storage.FsspecStore.from_url(f"s3://{folder}/labels.zarr", read_only=True),
                             mode="r")
    assert labels["landmarks_2d"].shape == (2, 478, 2) and labels["visible"][:].any()
    images = zarr.open_array(store=zarr.storage.FsspecStore.from_url(f"s3://{folder}/images.zarr", read_only=True),
                             mode="r")
    assert images.shape == (2, 96, 96, 3) and images.dtype == np.uint8 and images.chunks == (2, 96, 96, 3)
    assert images[0].std() > 5 and not np.array_equal(images[0], images[1])  # two renders, not blanks
    assert bucket.glob(f"{folder}/shards/*.json") == [f"{folder}/shards/00000.json"]
    assert "> One portrait, for a test." in bucket.cat_file(f"{folder}/card.md").decode()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("mlflow.db")) == ["home", "tmp"]
    assert not [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("avatarflow-")]  # Blender's scratch is gone
