"""Driving-video rows through the `avatarflow` command: a video-only row whose portrait is the
video's best frame, the same driver converted here with ffmpeg to HEVC at 720p with a variable
frame rate and a sound track, a reenactment (a shared portrait driven by the video) and a video
row whose script is spoken by espeak-ng. The rendered MP4s are read back with MediaPipe, which
must see the driver's lips, eyes and head."""

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
from tests.conftest import free_port, sample
from tasks.common.arkit import INDEX

pytestmark = pytest.mark.flow

RESOLUTION = 256
ROWS = ("driven", "converted", "reenacted", "spoken")
EYE_FLOOR = 0.8
"""Eye-openness Pearson r the render must keep with the driver (the face issue's target)."""


def track(path: Path):
    from tasks.capture.config import CaptureConfig
    from tasks.capture.tracking import track_frames
    from tasks.capture.video import iter_frames

    config = CaptureConfig()
    return track_frames(iter_frames(path, path.name, config, 120.0, config.track_max_side), config)


def follows(driver: Path, rendered: Path) -> dict:
    from tasks.capture.metrics import follow_correlations
    from tasks.reconstruct.canonical_shape import load_canonical_shape

    theirs, ours = track(driver), track(rendered)
    return follow_correlations(theirs.landmarks, theirs.times, theirs.found, ours.landmarks, ours.times,
                               ours.found, load_canonical_shape())


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    work = tmp_path_factory.mktemp("capture-flow")
    driver = sample("video", "lp_d0.mp4")
    portrait = sample("portraits", "sfhq_pt1_00000161.jpg")
    clip = work / "clip_hevc_720p_vfr.mp4"
    # The driver as HEVC at 720p with every third frame dropped (40 and 80 ms steps), and another
    # clip's speech as its sound track.
    subprocess.run(["ffmpeg", "-y", "-v", "error", "-i", str(driver), "-i", str(sample("video", "lp_d20.mp4")),
                    "-map", "0:v", "-map", "1:a", "-vf",
                    "select='not(eq(mod(n\\,3)\\,2))',scale=-2:720,pad=1280:720:(ow-iw)/2:0", "-fps_mode", "vfr",
                    "-c:v", "libx265", "-x265-params", "log-level=error", "-tag:v", "hvc1", "-c:a", "aac",
                    "-t", "3.0", str(clip)], check=True, timeout=300)
    manifest = work / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "portrait", "text", "video", "resolution"])
        writer.writerow(["driven", "", "", str(driver), str(RESOLUTION)])
        writer.writerow(["converted", "", "", clip.name, str(RESOLUTION)])
        writer.writerow(["reenacted", str(portrait), "", str(driver), "128"])
        writer.writerow(["spoken", "", "Hello there.", str(driver), "128"])
    data_dir = work / "data"
    args = [sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir", str(data_dir),
            "--prefect-port", str(free_port()), "--input-root", str(driver.parents[1])]
    try:
        done = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=1500)
    finally:
        stop_server(data_dir / "prefect")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(next((data_dir / "outputs").glob("*/summary.json")).read_text())
    store = zarr.open_group(str(data_dir / "avatars.zarr"), mode="r")
    yield {"summary": summary, "folder": Path(summary["output_folder"]), "driver": driver, "clip": clip,
           "groups": {row: store[f"runs/{summary['run']}/{row}"] for row in ROWS}}


def test_every_video_row_finishes_with_mp4_and_glb(produced):
    from tasks.render.runner import probe_video

    assert produced["summary"]["failed"] == []
    assert sorted(produced["summary"]["finished"]) == sorted(ROWS)
    for row, group in produced["groups"].items():
        assert group.attrs.get("complete") is True, row
        for name in ("talk.mp4", "avatar.glb"):
            assert (produced["folder"] / row / name).stat().st_size > 0, f"{row}/{name}"
        video = probe_video(produced["folder"] / row / "talk.mp4")
        assert video["audio_codec"] == "aac" and video["fps"] == 25
        assert video["n_frames"] == group["animation/weights"].shape[0]
        assert group["animation"].attrs["source"] == "capture"
        assert group["animation/weights"].attrs["source"] == "capture"
        assert group["animation/head_pose"].shape == (video["n_frames"], 6)


def test_the_store_records_the_capture(produced):
    driven = produced["groups"]["driven"]
    frames = driven["capture/landmarks"].shape[0]
    assert driven["capture/landmarks"].shape == (frames, 478, 3) and driven["capture/landmarks"].dtype == np.float32
    assert driven["capture/valid"].shape == (frames,) and driven["capture/valid"].dtype == bool
    assert driven["capture/valid"][:].mean() > 0.9
    # No portrait in the row: the portrait is the video frame with the best recorded score.
    portrait = driven["input/portrait"].attrs
    scores = driven["capture/portrait_score"][:]
    assert portrait["source"] == "video" and portrait["frame"] == int(np.argmax(scores))
    assert portrait["score"] == pytest.approx(float(scores.max()))
    assert driven["input/portrait"].shape == (512, 512, 3)  # the driver's own frame size


def test_the_render_follows_the_driver(produced):
    r = follows(produced["driver"], produced["folder"] / "driven" / "talk.mp4")
    assert r["frames"] >= 75
    assert r["lip_gap"] >= 0.9, r
    # The eyes follow the driver's blinks and gaze-lowered lids (a frozen eye scores 0).
    assert r["eye_openness"] >= EYE_FLOOR, r
    assert r["yaw"] >= 0.8 and r["pitch"] >= 0.8, r


def test_a_variable_frame_rate_hevc_720p_driver_keeps_sound_and_picture_in_step(produced):
    from tasks.render.runner import probe_video

    group = produced["groups"]["converted"]
    audio = group["input/audio"]
    assert audio.attrs["source"] == "video" and np.sqrt(np.mean(audio[:] ** 2)) > 1e-3
    video = probe_video(produced["folder"] / "converted" / "talk.mp4")
    # Sound and picture last as long as the driver's picture (its packets' timestamps, not a frame count).
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "packet=pts_time,duration_time", "-of", "json", str(produced["clip"])],
                           capture_output=True, text=True, check=True).stdout
    packets = json.loads(probe)["packets"]
    starts = [float(p["pts_time"]) for p in packets]
    span = max(float(p["pts_time"]) + float(p["duration_time"]) for p in packets) - min(starts)
    assert abs(audio.shape[0] / audio.attrs["sample_rate"] - span) < 1e-3
    assert abs(video["duration"] - span) <= 1.0 / 25
    r = follows(produced["clip"], produced["folder"] / "converted" / "talk.mp4")
    assert r["lip_gap"] >= 0.9, r
    # The eyes follow the driver's blinks and gaze-lowered lids (a frozen eye scores 0).
    assert r["eye_openness"] >= EYE_FLOOR, r
    assert r["yaw"] >= 0.8 and r["pitch"] >= 0.8, r


def test_a_reenactment_moves_another_face(produced):
    group = produced["groups"]["reenacted"]
    assert group["input/portrait"].attrs.get("source") != "video"  # the row's own portrait
    r = follows(produced["driver"], produced["folder"] / "reenacted" / "talk.mp4")
    assert r["lip_gap"] >= 0.9, r


def test_a_spoken_script_owns_the_mouth_and_the_video_the_rest(produced):
    group = produced["groups"]["spoken"]
    assert group["input/audio"].attrs["source"] == "text"
    assert group["animation"].attrs["mouth"] == "tts"
    weights = group["animation/weights"][:]
    # espeak-ng's leading silence: the mouth is shut there, while the captured eyes still move.
    assert weights[:3, INDEX["jawOpen"]].max() == 0.0 and weights[:, INDEX["jawOpen"]].max() > 0.2
    assert weights[:, [INDEX["eyeBlinkLeft"], INDEX["eyeLookInLeft"], INDEX["browInnerUp"]]].max() > 0.05
