"""Capture on real videos: bounded decoding with one-line errors, the video's sound, tracking of
HEVC / 720p / variable-frame-rate / portrait 1080×1920 versions made here with ffmpeg, and the
solve on a rig reconstructed from the video's own best frame."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tasks.capture.config import CaptureConfig
from tasks.capture.solve import solve_capture
from tasks.capture.tracking import portrait_scores, track_frames, usable_frames
from tasks.capture.video import iter_frames, load_video_sound, read_frame
from tasks.common.arkit import INDEX
from tasks.common.errors import AvatarInputError
from tests.conftest import sample

CONFIG = CaptureConfig()
RATE = 16000


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-v", "error", *args], check=True, timeout=300)


def packet_times(path: Path) -> np.ndarray:
    """Presentation times of the video packets from ffprobe, from the first frame (independent of PyAV)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    times = np.sort([float(p["pts_time"]) for p in json.loads(out)["packets"]])
    return times - times[0]


def frames_of(path: Path, config: CaptureConfig = CONFIG, max_seconds: float = 120.0, max_side=None):
    return list(iter_frames(path, path.name, config, max_seconds, max_side))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Short versions of a shared driver with sound: HEVC 720p at a variable frame rate, a portrait
    1080×1920 H.264 one, and one whose sound starts 0.4 s after the first frame."""
    work = tmp_path_factory.mktemp("clips")
    source = sample("video", "lp_d20.mp4")
    hevc = work / "hevc_720p_vfr.mp4"
    # Dropping every third frame with vfr timing leaves uneven timestamps (40 and 80 ms steps).
    ffmpeg("-t", "1.6", "-i", str(source), "-vf", "select='not(eq(mod(n\\,3)\\,2))',scale=-2:720,pad=1280:720:(ow-iw)/2:0",
           "-fps_mode", "vfr", "-c:v", "libx265", "-x265-params", "log-level=error", "-tag:v", "hvc1",
           "-c:a", "aac", str(hevc))
    tall = work / "portrait_1080x1920.mp4"
    ffmpeg("-t", "0.6", "-i", str(source), "-vf", "scale=1080:-2,pad=1080:1920:0:(oh-ih)/2", "-c:v", "libx264",
           "-preset", "ultrafast", "-an", str(tall))
    late = work / "late_sound.mp4"
    ffmpeg("-t", "1.0", "-i", str(source), "-itsoffset", "0.4", "-t", "1.0", "-i", str(source), "-map", "0:v",
           "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(late))
    return {"hevc": hevc, "tall": tall, "late": late, "source": source}


def test_hevc_720p_variable_frame_rate_is_tracked_on_its_own_timestamps(clips):
    path = clips["hevc"]
    frames = frames_of(path, max_side=CONFIG.track_max_side)
    assert frames[0].rgb.shape == (720, 1280, 3)
    times = np.array([f.time for f in frames])
    np.testing.assert_allclose(times, packet_times(path), atol=1e-3)
    steps = np.round(np.diff(times), 3)
    assert {0.04, 0.08} <= set(steps.tolist())  # really variable
    tracked = track_frames(iter(frames), CONFIG)
    assert tracked.found.all() and tracked.size == (1280, 720)
    # The face sits in the middle third of the padded frame.
    centre_x = np.nanmean(tracked.landmarks[:, :, 0])
    assert 400 < centre_x < 880


def test_portrait_video_keeps_its_pixels_when_scaled_for_tracking(clips):
    path = clips["tall"]
    full = frames_of(path)[0]
    assert full.rgb.shape == (1920, 1080, 3)
    small = frames_of(path, max_side=CONFIG.track_max_side)
    assert max(small[0].rgb.shape[:2]) <= CONFIG.track_max_side
    tracked = track_frames(iter(small), CONFIG)
    assert tracked.found.all() and tracked.size == (1080, 1920)
    # Landmarks come back in the video's own pixels: the face spans most of the 1080-pixel width.
    width = np.nanmax(tracked.landmarks[0, :, 0]) - np.nanmin(tracked.landmarks[0, :, 0])
    assert 300 < width < 1080
    np.testing.assert_array_equal(read_frame(path, path.name, 3, CONFIG, 120.0), frames_of(path)[3].rgb)


def test_sound_of_a_driving_video(clips):
    sound, notes = load_video_sound(clips["hevc"], RATE, 120.0)
    assert abs(sound.size / RATE - packet_times(clips["hevc"])[-1] - 0.04) < 0.05 and not notes
    assert np.sqrt(np.mean(sound ** 2)) > 1e-3
    silent, notes = load_video_sound(sample("video", "lp_d0.mp4"), RATE, 120.0)
    assert not silent.any() and abs(silent.size / RATE - 3.12) < 0.01
    assert notes == ["the driving video has no sound; the output has a silent track"]
    late, _ = load_video_sound(clips["late"], RATE, 120.0)
    on_time, _ = load_video_sound(clips["source"], RATE, 120.0)
    # The late track is shifted, not glued to the first frame: 0.4 s of silence, then the same sound.
    assert np.abs(late[: int(0.39 * RATE)]).max() < 1e-3  # AAC priming aside
    lag = np.argmax(np.correlate(late[: RATE], on_time[: RATE // 2], mode="valid"))
    assert abs(lag / RATE - 0.4) < 0.01
    assert abs(late.size / RATE - packet_times(clips["late"])[-1] - 0.04) < 1e-3  # as long as the picture


@pytest.mark.parametrize("case", ["corrupt", "empty", "no_video", "too_long", "huge", "missing"])
def test_bad_videos_give_one_line_errors(case, tmp_path):
    config, limit = CONFIG, 120.0
    path = tmp_path / f"{case}.mp4"
    if case == "corrupt":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        expected = "not a readable video or corrupt"
    elif case == "empty":
        path.write_bytes(b"")
        expected = "empty file"
    elif case == "no_video":
        path = tmp_path / "speech.wav"
        path.write_bytes(sample("audio", "fr_st_fayu.wav").read_bytes())
        expected = "no video stream"
    elif case == "too_long":
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:duration=3", "-c:v", "libx264", str(path))
        limit, expected = 1.0, "video is too long"
    elif case == "huge":
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=256x256:rate=10:duration=0.2", "-c:v", "libx264", str(path))
        config, expected = CaptureConfig(max_frame_pixels=100 * 100), "video frames are too large"
    else:
        expected = "file not found"
    with pytest.raises(AvatarInputError) as caught:
        if case in ("empty", "missing"):
            load_video_sound(path, RATE, limit, config)
        else:
            frames_of(path, config, limit)
    message = str(caught.value)
    assert expected in message and "\n" not in message and message.startswith(path.name)
    if case not in ("empty", "missing"):
        with pytest.raises(AvatarInputError, match=expected):
            load_video_sound(path, RATE, limit, config)


def test_video_drives_a_rig_built_from_its_best_frame():
    from tasks.capture.solve import _apertures
    from tasks.capture.tracking import eye_openness, lip_gap
    from tasks.reconstruct.canonical_shape import load_canonical_shape
    from tasks.reconstruct.rig import reconstruct

    path = sample("video", "lp_d0.mp4")
    tracked = track_frames(iter(frames_of(path, max_side=CONFIG.track_max_side)), CONFIG)
    valid = usable_frames(tracked.found, tracked.sharpness, CONFIG.blur_ratio)
    scores = portrait_scores(tracked.landmarks, valid, tracked.sharpness, load_canonical_shape())
    best = int(np.argmax(scores))
    # The chosen frame has its eyes open and its mouth at its most closed among sharp frontal ones.
    assert lip_gap(tracked.landmarks[best:best + 1])[0] <= np.percentile(lip_gap(tracked.landmarks[valid]), 25)
    assert eye_openness(tracked.landmarks[best:best + 1])[0] >= np.median(eye_openness(tracked.landmarks[valid]))
    rig = reconstruct(read_frame(path, path.name, best, CONFIG, 120.0), 256)
    n_frames = 78
    motion = solve_capture(tracked.landmarks, valid, tracked.times, rig.vertices[:478], rig.deltas[:, :478],
                           n_frames, 25.0, CONFIG)
    assert motion.weights.shape == (n_frames, 52) and motion.head_pose.shape == (n_frames, 6)
    assert motion.weights.min() >= 0.0 and motion.weights.max() <= 1.0
    assert np.nanmedian(motion.fit_error) < 0.05
    # The lips open when the driver's do (same frame rate, so frames line up one to one).
    driver_gap = lip_gap(tracked.landmarks)[:n_frames]
    opening = motion.weights[:, INDEX["jawOpen"]] + motion.weights[:, INDEX["mouthLowerDownLeft"]]
    assert np.corrcoef(opening, driver_gap)[0, 1] > 0.7
    # The driver blinks once, near 2.7 s: the rig's lids (every shape applied) shut there and nowhere else.
    neutral, deltas = rig.vertices[:478].astype(np.float64), rig.deltas[:, :478].astype(np.float64)
    lids = _apertures(neutral + np.einsum("tk,knd->tnd", motion.weights.astype(np.float64), deltas)).mean(axis=1)
    eyes = eye_openness(tracked.landmarks)[:n_frames]
    assert abs(int(np.argmin(lids)) - int(np.argmin(eyes))) <= 1
    assert lids.min() < 0.15 * np.median(lids) and np.sort(lids)[5] > 0.5 * np.median(lids)
    blink = motion.weights[:, [INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]]].mean(axis=1)
    assert blink.max() > 0.9
