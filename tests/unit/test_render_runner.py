"""Render runner and job-file helpers: job round trip, rejected inputs, pose maths, ffprobe and
audio muxing on tiny ffmpeg-made videos, and the failure paths of the Blender subprocess."""

from __future__ import annotations

import json
import subprocess
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from tasks.common.arkit import ARKIT_NAMES
from tasks.render import blender_job
from tasks.render.config import RenderConfig
from tasks.render.task import EXPORT_OUTPUTS, RENDER_OUTPUTS, outputs_for
from tasks.render.runner import (
    RenderError,
    fit_audio_length,
    job_outputs,
    mux_audio,
    probe_video,
    run_blender_job,
    write_job,
    write_wav,
)

K = len(ARKIT_NAMES)


def tiny_rig(seed: int = 0, n_frames: int = 4) -> dict:
    """A two-triangle rig with random deltas and animation."""
    rng = np.random.default_rng(seed)
    vertices = np.array([[-0.1, -0.1, 0.0], [0.1, -0.1, 0.0], [0.1, 0.1, 0.02], [-0.1, 0.1, 0.0]], np.float32)
    return {
        "vertices": vertices,
        "faces": np.array([[0, 1, 2], [0, 2, 3]], np.int32),
        "uv_photo": rng.random((4, 2)).astype(np.float32),
        "uv_canonical": rng.random((4, 2)).astype(np.float32),
        "deltas": (0.01 * rng.standard_normal((K, 4, 3))).astype(np.float32),
        "pivot": np.array([0.0, 0.0, -0.1], np.float32),
        "texture": rng.integers(0, 256, (18, 16, 3), dtype=np.uint8),
        "weights": rng.random((n_frames, K)).astype(np.float32),
        "head_pose": (0.1 * rng.standard_normal((n_frames, 6))).astype(np.float32),
    }


def make_test_video(path: Path, n_frames: int, fps: int = 25, size: str = "64x48", pix_fmt: str = "yuv420p") -> Path:
    """A tiny H.264 video of ffmpeg's test pattern."""
    subprocess.run(
        ["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}",
         "-frames:v", str(n_frames), "-c:v", "libx264", "-pix_fmt", pix_fmt, str(path)],
        check=True)
    return path


def test_write_job_round_trips_through_the_job_loader(tmp_path):
    rig = tiny_rig()
    settings = RenderConfig(mode="lit", cycles_samples=3, cycles_device="cpu", write_blend=False, keep_frames=True)
    job_path = write_job(tmp_path / "job", **rig, settings=settings, fps=30, resolution=64, seed=7,
                         out_dir=tmp_path / "out")
    job = blender_job.load_job(job_path)
    assert job["mode"] == "lit" and job["cycles_samples"] == 3 and job["cycles_device"] == "cpu"
    assert job["fps"] == 30 and job["resolution"] == 64 and job["seed"] == 7
    assert job["poster_frame"] == 2  # middle of 4 frames, 1-based
    assert job["out_dir"] == str((tmp_path / "out").resolve())
    assert job["outputs"] == {"video": "frames.mp4", "glb": "avatar.glb", "blend": None,
                              "poster": "poster.png", "frames_dir": "frames"}
    assert job["shape_key_names"] == list(ARKIT_NAMES)
    loaded = blender_job.load_rig(job["rig_npz"], job["shape_key_names"])
    for key in blender_job.RIG_KEYS:
        np.testing.assert_array_equal(loaded[key], rig[key])
    texture = np.asarray(Image.open(job["texture_png"]))
    np.testing.assert_array_equal(texture, rig["texture"])


def test_job_outputs_follow_the_settings():
    outputs = job_outputs(RenderConfig(write_glb=False, write_blend=True, keep_frames=False))
    assert outputs["glb"] is None and outputs["blend"] == "avatar.blend" and outputs["frames_dir"] is None
    assert outputs["video"] and outputs["poster"]


def test_write_job_rejects_mismatched_shapes(tmp_path):
    rig = tiny_rig()
    rig["head_pose"] = rig["head_pose"][:-1]
    with pytest.raises(ValueError, match="head_pose"):
        write_job(tmp_path, **rig, settings=RenderConfig(), fps=25, resolution=64, seed=0)
    rig = tiny_rig()
    rig["texture"] = rig["texture"][:16]  # square: no band below the photo
    with pytest.raises(ValueError, match="texture"):
        write_job(tmp_path, **rig, settings=RenderConfig(), fps=25, resolution=64, seed=0)


@pytest.mark.parametrize("change, message", [
    (lambda job: job.pop("fps"), "lacks"),
    (lambda job: job.update(resolution=63), "even"),
    (lambda job: job.update(mode="eevee"), "mode"),
    (lambda job: job["outputs"].update(glb="/elsewhere/avatar.glb"), "inside out_dir"),
    (lambda job: job["outputs"].update(video="../up.mp4"), "inside out_dir"),
    (lambda job: job["outputs"].update(sound="a.wav"), "unknown outputs"),
    (lambda job: job.update(seed=True), "seed"),
    (lambda job: job.update(colour_passthrough="yes"), "colour_passthrough"),
    (lambda job: job.update(face_crop=1), "face_crop"),
])
def test_load_job_rejects_bad_fields(tmp_path, change, message):
    job_path = write_job(tmp_path, **tiny_rig(), settings=RenderConfig(), fps=25, resolution=64, seed=0)
    job = json.loads(job_path.read_text())
    change(job)
    job_path.write_text(json.dumps(job))
    with pytest.raises(blender_job.JobError, match=message):
        blender_job.load_job(job_path)


def test_only_photo_jobs_without_scene_files_pass_colour_through(tmp_path):
    def loaded(name, settings, kinds, **fields):
        job_path = write_job(tmp_path / name, **tiny_rig(), settings=settings, fps=25, resolution=64, seed=0,
                             outputs=outputs_for(settings, kinds))
        job_path.write_text(json.dumps({**json.loads(job_path.read_text()), **fields}))
        return blender_job.load_job(job_path)

    photo, lit = RenderConfig(mode="photo"), RenderConfig(mode="lit")
    assert blender_job.passes_colour_through(loaded("render", photo, RENDER_OUTPUTS))
    assert not blender_job.passes_colour_through(loaded("export", photo, EXPORT_OUTPUTS))
    assert not blender_job.passes_colour_through(loaded("lit", lit, RENDER_OUTPUTS))
    assert not blender_job.passes_colour_through(loaded("off", photo, RENDER_OUTPUTS, colour_passthrough=False))


def test_the_face_box_holds_every_vertex_of_every_frame_on_even_pixels():
    from tests.render_rig import make_animation, make_rig

    size = 256
    rig = make_rig(size)
    n_frames = blender_job.FACE_CROP_CHUNK_FRAMES + 40  # the frames are read in two chunks
    weights, head_pose = make_animation(n_frames, pose_from=10)
    head_pose[-1] = [0.0, 0.5, 0.0, 0.04, -0.02, 0.0]  # the widest pose is in the second chunk's last frame
    rig.update(weights=weights, head_pose=head_pose)
    left, top, width, height = blender_job.face_box(rig, size)
    assert all(value % 2 == 0 for value in (left, top, width, height))
    margin = blender_job.FACE_CROP_MARGIN_PX
    for index in range(n_frames):
        world = blender_job.expected_world_vertices(rig, index)
        columns, rows = (world[:, 0] + 0.5) * size, (0.5 - world[:, 1]) * size
        assert columns.min() >= left + margin and columns.max() <= left + width - margin
        assert rows.min() >= top + margin and rows.max() <= top + height - margin
    # without the last frame's turn the box is narrower: the chunk that holds it was read
    rig.update(weights=weights[:-1], head_pose=head_pose[:-1])
    assert blender_job.face_box(rig, size)[2] < width


def test_a_face_that_fills_the_frame_is_rendered_whole(tmp_path):
    from tests.render_rig import make_animation, make_rig

    rig = make_rig(128)
    rig["vertices"] = rig["vertices"] * np.array([2.0, 1.6, 1.0], np.float32)
    rig["weights"], rig["head_pose"] = make_animation(5)
    assert blender_job.face_box(rig, 128) is None
    photo, lit = RenderConfig(mode="photo"), RenderConfig(mode="lit")
    small = {**make_rig(128), "weights": rig["weights"], "head_pose": rig["head_pose"]}

    def box_of(name, settings, kinds, **fields):
        job_path = write_job(tmp_path / name, **tiny_rig(), settings=settings, fps=25, resolution=64, seed=0,
                             outputs=outputs_for(settings, kinds))
        job_path.write_text(json.dumps({**json.loads(job_path.read_text()), **fields}))
        return blender_job.face_crop_box(blender_job.load_job(job_path), small)

    assert box_of("render", photo, RENDER_OUTPUTS) == blender_job.face_box(small, 64)
    assert box_of("export", photo, EXPORT_OUTPUTS) is None  # a GLB or .blend keeps the whole frame's camera
    assert box_of("both", photo, RENDER_OUTPUTS + EXPORT_OUTPUTS) is None
    assert box_of("lit", lit, RENDER_OUTPUTS) is None
    assert box_of("off", photo, RENDER_OUTPUTS, face_crop=False) is None
    assert box_of("lossless", photo, RENDER_OUTPUTS, video_quality="LOSSLESS") is None  # yuv444p from Blender


def test_load_rig_rejects_nan_and_bad_faces(tmp_path):
    rig = tiny_rig()
    rig["weights"][1, 3] = np.nan
    job = blender_job.load_job(write_job(tmp_path / "a", **rig, settings=RenderConfig(), fps=25, resolution=64, seed=0))
    with pytest.raises(blender_job.JobError, match="weights"):
        blender_job.load_rig(job["rig_npz"], job["shape_key_names"])
    rig = tiny_rig()
    rig["faces"][0, 0] = 9
    job = blender_job.load_job(write_job(tmp_path / "b", **rig, settings=RenderConfig(), fps=25, resolution=64, seed=0))
    with pytest.raises(blender_job.JobError, match="faces"):
        blender_job.load_rig(job["rig_npz"], job["shape_key_names"])


def test_euler_matrix_matches_blender_xyz_order():
    angles = np.array([0.3, -0.7, 1.1])
    # Blender's XYZ Euler rotates about fixed X, then Y, then Z: scipy's extrinsic "xyz"
    expected = Rotation.from_euler("xyz", angles).as_matrix()
    np.testing.assert_allclose(blender_job.euler_xyz_matrix(*angles), expected, atol=1e-12)
    # a quarter turn of yaw takes +x to -z
    np.testing.assert_allclose(blender_job.euler_xyz_matrix(0, np.pi / 2, 0) @ [1, 0, 0], [0, 0, -1], atol=1e-12)


def test_keyed_frames_drop_only_keys_that_linear_interpolation_restores():
    rng = np.random.default_rng(3)
    values = np.zeros(400, dtype=np.float32)  # at rest, then a blink, a held pose, and noise
    values[50:60] = np.linspace(0.0, 1.0, 10)
    values[60:200] = 0.7
    values[300:] = rng.random(100)
    frames = blender_job.keyed_frames(values)
    assert frames[0] == 0 and frames[-1] == len(values) - 1
    assert len(frames) < len(values) // 2
    # every frame, keyed or not, is what Blender's LINEAR curve through the kept keys gives
    restored = np.interp(np.arange(len(values)), frames, values[frames])
    np.testing.assert_array_equal(restored.astype(np.float32), values)
    assert list(blender_job.keyed_frames(np.ones(1))) == [0]
    assert list(blender_job.keyed_frames(np.ones(5))) == [0, 4]


def test_expected_world_vertices_rotates_about_the_pivot():
    rig = {
        "vertices": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], np.float32),
        "deltas": np.zeros((1, 2, 3), np.float32),
        "weights": np.zeros((1, 1), np.float32),
        "head_pose": np.array([[0.0, 0.0, np.pi / 2, 0.0, 0.0, 0.5]], np.float32),
        "pivot": np.array([0.0, 0.0, 0.0], np.float32),
    }
    rig["deltas"][0, 1] = [0.0, 1.0, 0.0]
    rig["weights"][0, 0] = 0.5
    world = blender_job.expected_world_vertices(rig, 0)
    # roll 90 degrees: +x -> +y, +y -> -x; then translate z by 0.5
    np.testing.assert_allclose(world, [[0.0, 1.0, 0.5], [-0.5, 0.0, 0.5]], atol=1e-6)


def test_probe_video_reads_a_test_pattern(tmp_path):
    video = make_test_video(tmp_path / "test.mp4", n_frames=12)
    info = probe_video(video)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (64, 48)
    assert info["fps"] == pytest.approx(25.0)
    assert info["n_frames"] == 12
    assert info["duration"] == pytest.approx(12 / 25, abs=1e-3)
    assert info["audio_codec"] is None


def test_probe_video_counts_frames_without_container_count(tmp_path):
    video = tmp_path / "test.mkv"  # Matroska stores no frame count
    subprocess.run(["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=10",
                    "-frames:v", "7", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)], check=True)
    assert probe_video(video)["n_frames"] == 7


def test_probe_video_raises_for_missing_file(tmp_path):
    with pytest.raises(RenderError, match="no video"):
        probe_video(tmp_path / "missing.mp4")


def test_fit_audio_length_pads_and_trims():
    audio = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(fit_audio_length(audio, 3), [0, 1, 2])
    np.testing.assert_array_equal(fit_audio_length(audio, 7), [0, 1, 2, 3, 4, 0, 0])
    assert fit_audio_length(np.ones((4, 2)), 6).shape == (6, 2)


def test_write_wav_clips_and_keeps_the_rate(tmp_path):
    path = write_wav(tmp_path / "a.wav", np.array([0.0, 0.5, 2.0, -2.0], np.float32), 16000)
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1 and wav.getsampwidth() == 2
        samples = np.frombuffer(wav.readframes(4), dtype="<i2")
    np.testing.assert_array_equal(samples, [0, 16384, 32767, -32767])


@pytest.mark.parametrize("audio_seconds", [0.3, 1.5])
def test_mux_audio_matches_the_video_length(tmp_path, audio_seconds):
    video = make_test_video(tmp_path / "silent.mp4", n_frames=20)
    rate = 16000
    t = np.arange(int(audio_seconds * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = mux_audio(video, audio, rate, tmp_path / "talk.mp4")
    info = probe_video(out)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["n_frames"] == 20
    assert info["audio_codec"] == "aac" and info["audio_sample_rate"] == rate
    assert abs(info["duration"] - 20 / 25) <= 1 / 25
    assert not (tmp_path / "talk.wav").exists()
    # +faststart: the moov atom comes before the media data
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))


def test_mux_audio_keeps_the_sound_and_interleaves_it_with_the_picture(tmp_path):
    import av

    video = make_test_video(tmp_path / "silent.mp4", n_frames=150)  # 6 s
    rate = 16000
    t = np.arange(6 * rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = mux_audio(video, tone, rate, tmp_path / "talk.mp4")
    with av.open(str(out)) as container:
        decoded = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    with av.open(str(out)) as container:
        positions = {"video": [], "audio": []}
        for packet in container.demux():
            if packet.pos is not None and packet.pos >= 0:
                positions[packet.stream.type].append(packet.pos)
    # The tone comes back: its level and its pitch (zero crossings over the middle 4 s).
    middle = decoded[rate:5 * rate]
    assert abs(np.sqrt(np.mean(middle ** 2)) - 0.3 / np.sqrt(2)) < 0.02
    crossings = np.count_nonzero(np.signbit(middle[1:]) != np.signbit(middle[:-1]))
    assert abs(crossings / 2 / 4.0 - 440) < 5
    # Sound and picture alternate through the file: a player streaming it never waits on one of them.
    assert min(positions["audio"]) < np.median(positions["video"]) < max(positions["audio"])


def test_mux_audio_counts_frames_of_a_container_without_a_count(tmp_path):
    video = make_test_video(tmp_path / "silent.mkv", n_frames=30)  # Matroska stores no frame count
    out = mux_audio(video, np.zeros(4000, np.float32), 16000, tmp_path / "talk.mp4")
    info = probe_video(out)
    assert info["n_frames"] == 30 and abs(info["duration"] - 30 / 25) <= 1 / 25


def test_mux_audio_refuses_bad_samples_and_leaves_no_file(tmp_path):
    video = make_test_video(tmp_path / "silent.mp4", n_frames=10)
    audio = np.zeros(6400, np.float32)
    audio[3000] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        mux_audio(video, audio, 16000, tmp_path / "talk.mp4")
    assert not (tmp_path / "talk.mp4").exists()


def test_mux_audio_names_an_unreadable_video(tmp_path):
    broken = tmp_path / "frames.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(RenderError, match="not a readable video"):
        mux_audio(broken, np.zeros(1600, np.float32), 16000, tmp_path / "talk.mp4")


def test_mux_audio_re_encodes_non_yuv420p_video(tmp_path):
    video = make_test_video(tmp_path / "silent.mp4", n_frames=10, pix_fmt="yuv444p")
    out = mux_audio(video, np.zeros(8000, np.float32), 16000, tmp_path / "talk.mp4")
    info = probe_video(out)
    assert info["pix_fmt"] == "yuv420p" and info["n_frames"] == 10


@pytest.mark.parametrize("jobs_per_blender", [1, 50], ids=["one-shot", "long-lived"])
def test_run_blender_job_reports_the_log_on_failure(tmp_path, jobs_per_blender):
    job_path = write_job(tmp_path, **tiny_rig(), settings=RenderConfig(), fps=25, resolution=64, seed=0)
    (tmp_path / "rig.npz").write_bytes(b"not an npz")
    with pytest.raises(RenderError) as failure:
        run_blender_job(job_path, timeout_s=120, jobs_per_blender=jobs_per_blender)
    message = str(failure.value)
    assert message.startswith(f"Blender job {job_path.resolve()} failed") and "job failed" in message
    assert (tmp_path / "blender.log").is_file() and not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("jobs_per_blender", [1, 50], ids=["one-shot", "long-lived"])
def test_run_blender_job_kills_a_job_past_its_timeout(tmp_path, jobs_per_blender):
    job_path = write_job(tmp_path, **tiny_rig(), settings=RenderConfig(), fps=25, resolution=64, seed=0)
    with pytest.raises(RenderError, match="ran past"):
        run_blender_job(job_path, timeout_s=0.05, jobs_per_blender=jobs_per_blender)
    assert not (tmp_path / "result.json").exists()


def test_one_job_per_blender_runs_the_one_shot_script(tmp_path):
    """jobs_per_blender=1 is the debugging fallback: `blender_job.py --job`, a process per job."""
    results = {}
    for jobs_per_blender in (1, 50):
        job_dir = tmp_path / str(jobs_per_blender)
        job_path = write_job(job_dir, **tiny_rig(n_frames=2), settings=RenderConfig(write_glb=False, write_blend=False),
                             fps=25, resolution=16, seed=0)
        results[jobs_per_blender] = run_blender_job(job_path, timeout_s=120, jobs_per_blender=jobs_per_blender)
        log = (job_dir / "blender.log").read_text()
        assert ("(serving process " in log) == (jobs_per_blender > 1)
        assert json.loads((job_dir / "result.json").read_text()) == results[jobs_per_blender]
    assert results[1]["frames"] == results[50]["frames"] == 2
    assert set(results[1]["paths"]) == set(results[50]["paths"]) == {"video", "poster"}


def test_jobs_per_blender_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AVATARFLOW_JOBS_PER_BLENDER", "7")
    assert RenderConfig().jobs_per_blender == 7
    monkeypatch.setenv("AVATARFLOW_JOBS_PER_BLENDER", "many")
    with pytest.raises(ValueError, match="AVATARFLOW_JOBS_PER_BLENDER"):
        RenderConfig()
    monkeypatch.delenv("AVATARFLOW_JOBS_PER_BLENDER")
    assert RenderConfig().jobs_per_blender == 50
    with pytest.raises(ValueError, match="jobs_per_blender"):
        RenderConfig(jobs_per_blender=0)


def test_render_config_rejects_unknown_values():
    with pytest.raises(ValueError, match="mode"):
        RenderConfig(mode="eevee")
    with pytest.raises(ValueError, match="cycles_device"):
        RenderConfig(cycles_device="metal")
    with pytest.raises(ValueError, match="video_quality"):
        replace(RenderConfig(), video_quality="ULTRA")
    assert RenderConfig().mode == "photo" and RenderConfig().cycles_samples == 16
