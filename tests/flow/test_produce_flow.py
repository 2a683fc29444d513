"""The whole production flow on a 3-row manifest (one text row, one audio row, one bad row),
through the `avatarflow` command: a real Prefect server, LocalCluster, Zarr store, MLflow sqlite,
espeak-ng, MediaPipe and Blender, at a small size."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from infra.prefect_server import stop_server
from tests.conftest import REPO, free_port, sample
from tasks.common.arkit import ARKIT_NAMES, INDEX

pytestmark = pytest.mark.flow


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avatarflow.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=1500)


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    from PIL import Image
    from skimage import data

    work = tmp_path_factory.mktemp("flow")
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    (work / "empty.jpg").write_bytes(b"")
    speech = sample("audio", "en_em_echomimic_en.wav")
    portrait = sample("portraits", "sfhq_pt1_00000161.jpg")
    manifest = work / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "portrait", "text", "audio", "resolution"])
        writer.writerow(["texter", "astronaut.png", "Hello there. Nice to meet you.", "", "192"])
        writer.writerow(["speaker", str(portrait), "", str(speech), "128"])
        writer.writerow(["broken", "empty.jpg", "This portrait is an empty file.", "", "128"])
    data_dir = work / "data"
    port = str(free_port())
    args = ["produce", str(manifest), "--data-dir", str(data_dir), "--prefect-port", port,
            "--input-root", str(speech.parents[1])]
    first = run_cli(*args, cwd=work)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads(next((data_dir / "outputs").glob("*/summary.json")).read_text())
    second = run_cli(*args, cwd=work)
    yield {"data_dir": data_dir, "summary": summary, "first": first, "second": second,
           "speech": speech, "run": summary["run"]}
    stop_server(data_dir / "prefect")


def test_cli_prints_progress_timings_and_output_folder(produced):
    out = produced["first"].stdout + produced["first"].stderr
    assert "texter: reconstruct done" in out and "speaker: render done" in out
    assert "stage render" in out and "x real time" in out
    assert f"outputs: {produced['summary']['output_folder']}" in produced["first"].stdout


def test_every_output_is_written(produced):
    from tasks.render.runner import probe_video

    folder = Path(produced["summary"]["output_folder"])
    store = zarr.open_group(str(produced["data_dir"] / "avatars.zarr"), mode="r")
    for avatar, fps in (("texter", 25), ("speaker", 25)):
        for name in ("talk.mp4", "avatar.glb", "avatar.blend", "poster.png"):
            assert (folder / avatar / name).stat().st_size > 0, f"{avatar}/{name}"
        video = probe_video(folder / avatar / "talk.mp4")
        assert video["codec"] == "h264" and video["pix_fmt"] == "yuv420p" and video["audio_codec"] == "aac"
        assert video["fps"] == fps
        group = store[f"runs/{produced['run']}/{avatar}"]
        speech_seconds = group["input/audio"].shape[0] / group["input/audio"].attrs["sample_rate"]
        assert abs(video["duration"] - speech_seconds) <= 1.0 / fps
        assert video["n_frames"] == group["animation/weights"].shape[0]
    assert (folder / "report.html").is_file()


def test_summary_times_the_last_video_and_every_stage(produced):
    summary = produced["summary"]
    assert 0 < summary["video_wall_seconds"] <= summary["wall_seconds"]
    assert 0 < summary["plan_seconds"] < summary["video_wall_seconds"]  # planning comes before any row's task
    assert summary["video_realtime_factor"] >= summary["realtime_factor"] > 0
    assert {"ingest", "reconstruct", "animate", "render", "export"} == set(summary["stage_seconds"])


def test_bad_row_is_quarantined_with_one_line(produced):
    with open(Path(produced["summary"]["output_folder"]) / "quarantine.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["stage"]) for r in rows] == [("broken", "ingest")]
    assert rows[0]["error"] == "empty.jpg: empty file"
    assert sorted(produced["summary"]["finished"]) == ["speaker", "texter"]


def test_zarr_store_follows_the_schema(produced):
    store = zarr.open_group(str(produced["data_dir"] / "avatars.zarr"), mode="r")
    group = store[f"runs/{produced['run']}/texter"]
    vertices = group["mesh/vertices"]
    n_vertices = vertices.shape[0]
    assert vertices.shape[1] == 3 and n_vertices >= 478 and vertices.dtype == np.float32
    assert group["mesh/faces"].shape[1] == 3 and group["mesh/faces"].dtype == np.int32
    assert group["mesh/uv"].shape == (n_vertices, 2)
    assert group["texture/albedo"].dtype == np.uint8 and group["texture/albedo"].shape[2] == 3
    assert group["blendshapes/deltas"].shape == (52, n_vertices, 3)
    assert list(group["blendshapes/deltas"].attrs["names"]) == list(ARKIT_NAMES)
    weights = group["animation/weights"]
    assert weights.shape[1] == 52 and weights.attrs["fps"] == 25
    assert group["animation/head_pose"].shape == (weights.shape[0], 6)
    attrs = dict(group.attrs)
    assert attrs["complete"] is True
    assert set(attrs["stages"]) == {"ingest", "reconstruct", "animate", "render", "export"}
    assert set(attrs["outputs"]) == {"video", "poster", "glb", "blend"}
    # the exports ran after the render that they follow, and the avatar was complete only then
    render, export = attrs["stages"]["render"], attrs["stages"]["export"]
    assert render["video_published_at"] <= export["finished_at"] - export["seconds"]
    assert attrs["render"]["frames"] == weights.shape[0] and attrs["render"]["export_blender_seconds"]
    assert attrs["manifest_row"]["id"] == "texter"
    broken = dict(store[f"runs/{produced['run']}/broken"].attrs)
    assert broken["complete"] is False and broken["error"]["stage"] == "ingest"


def test_speech_opens_the_jaw_and_silence_closes_it(produced):
    store = zarr.open_group(str(produced["data_dir"] / "avatars.zarr"), mode="r")
    for avatar in ("texter", "speaker"):
        weights = store[f"runs/{produced['run']}/{avatar}/animation/weights"][...]
        jaw = weights[:, INDEX["jawOpen"]]
        assert jaw.max() > 0.3, avatar
    texter = store[f"runs/{produced['run']}/texter/animation/weights"][...]
    assert texter[0, INDEX["jawOpen"]] < 0.05  # synthesized speech starts with silence


def test_glb_has_arkit_morph_targets(produced):
    import pygltflib

    glb = pygltflib.GLTF2().load(str(Path(produced["summary"]["output_folder"]) / "texter" / "avatar.glb"))
    meshes = [m for m in glb.meshes if m.extras and "targetNames" in m.extras]
    assert meshes, "no mesh carries extras.targetNames"
    names = meshes[0].extras["targetNames"]
    assert list(names) == list(ARKIT_NAMES)
    targets = meshes[0].primitives[0].targets
    nonzero = sum(1 for t in targets if any(abs(v) > 1e-6 for v in glb.accessors[t["POSITION"]].max
                                               + glb.accessors[t["POSITION"]].min))
    assert nonzero >= 20
    assert glb.images and glb.textures, "the GLB carries no texture"


def test_mlflow_run_records_the_flow_run(produced):
    import mlflow

    from stores.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(produced["data_dir"]))
    runs = mlflow.search_runs(experiment_names=["avatarflow-produce"], output_format="list")
    first = [r for r in runs if r.data.metrics.get("avatars_finished") == 2 and r.data.metrics.get("avatars_reused") == 0]
    assert first, [r.data.metrics for r in runs]
    metrics = first[0].data.metrics
    assert metrics["realtime_factor"] > 0 and metrics["frames"] > 0 and metrics["stage_seconds_render"] > 0
    assert metrics["stage_seconds_export"] > 0 and 0 < metrics["video_wall_seconds"] <= metrics["wall_seconds"]
    assert first[0].data.params["manifest_sha256"]


def test_rerun_reuses_completed_avatars(produced):
    second = produced["second"]
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "finished: 2 (2 reused)" in second.stdout
    assert "render started" not in second.stdout + second.stderr


def test_rendered_lips_follow_the_speech(produced):
    """MediaPipe, as a viewer, finds the face in the rendered frames and sees the lips part with speech."""
    from tasks.render.lipsync_metrics import check

    folder = Path(produced["summary"]["output_folder"])
    # The astronaut smiles with parted lips in the photo, so her rest pose is not fully closed.
    for avatar, opening in (("texter", 1.4), ("speaker", 2.0)):
        result = check(folder / avatar / "talk.mp4")
        assert result["face_found"] >= 0.98, (avatar, result)
        assert result["gap_speaking"] > opening * result["gap_silent"], (avatar, result)
        assert result["gap_loudness_corr"] > 0.3, (avatar, result)


def test_runs_publish_prefect_artifacts_and_failure_events(produced):
    """Each of the two runs left its progress at 100 %, the avatars and quarantine tables and the bad
    row's failure event on the Prefect server, tied to its flow run."""
    import json
    import re
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.batch.monitoring import FAILURE_EVENT, artifact_key

    ui = re.search(r"prefect: (http://\S+) \(UI\)", produced["first"].stdout).group(1)
    run = produced["run"]
    with temporary_settings(updates={PREFECT_API_URL: f"{ui}/api"}), get_client(sync_client=True) as client:
        def versions(kind: str) -> list:
            found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(run, kind)])))
            return sorted(found, key=lambda artifact: artifact.created)

        progress = versions("progress")
        assert len(progress) == 2 and [float(a.data) for a in progress] == [100.0, 100.0]
        flow_runs = [a.flow_run_id for a in progress]
        avatars, quarantine = versions("avatars"), versions("quarantine")
        assert [a.flow_run_id for a in avatars] == flow_runs == [a.flow_run_id for a in quarantine]
        first, second = (json.loads(a.data) for a in avatars)
        assert [(r["id"], r["status"]) for r in first] == [("texter", "finished"), ("speaker", "finished"), ("broken", "failed")]
        assert [(r["id"], r["status"]) for r in second] == [("texter", "reused"), ("speaker", "reused"), ("broken", "failed")]
        assert first[0]["render_s"] > 0 and first[0]["ingest_s"] > 0 and first[2]["failed_stage"] == "ingest"
        assert [(r["id"], r["stage"]) for r in json.loads(quarantine[-1].data)] == [("broken", "ingest")]

        deadline = time.monotonic() + 30  # the server stores events in batches
        while True:
            events = client.request("POST", "/events/filter", json={"filter": {
                "event": {"name": [FAILURE_EVENT]}, "related": {"id": [f"prefect.flow-run.{i}" for i in flow_runs]}}}).json()["events"]
            if len(events) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sorted(e["payload"]["stage"] + ":" + e["payload"]["id"] for e in events) == ["ingest:broken"] * 2
        assert {e["resource"]["prefect.resource.id"] for e in events} == {f"avatarflow.avatar.{run}.broken"}


def test_lit_preset_renders_with_cycles(tmp_path):
    """The lit preset goes through the same flow with Cycles (a one-row manifest at 64²)."""
    from PIL import Image
    from skimage import data

    from tasks.render.runner import probe_video

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    (tmp_path / "lit.csv").write_text("id,portrait,text,resolution\nlit,astronaut.png,Hi.,64\n")
    done = run_cli("produce", str(tmp_path / "lit.csv"), "--data-dir", str(tmp_path / "data"),
                   "--preset", "lit", "--prefect-port", str(free_port()), cwd=tmp_path)
    stop_server(tmp_path / "data" / "prefect")
    assert done.returncode == 0 and "finished: 1 (0 reused)" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    video = next((tmp_path / "data" / "outputs").glob("*/lit/talk.mp4"))
    probed = probe_video(video)
    assert (probed["width"], probed["height"]) == (64, 64) and probed["audio_codec"] == "aac"
