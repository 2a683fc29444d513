"""The render stage's side of the process boundary: write a Blender job, run it in a Blender
process (the worker's long-lived one, see blender_worker), mux the sound in (in process, with
PyAV), and describe a video with ffprobe (`probe_video`, an independent reader). No bpy here."""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image

from tasks.common.arkit import ARKIT_NAMES
from tasks.common.memory import release_freed_memory
from tasks.render.blender_worker import (  # noqa: F401  (re-exported: callers import them from here)
    BLENDER_JOB_SCRIPT,
    LOG_FILE,
    LOG_TAIL_LINES,
    RenderError,
    log_tail,
    run_one_shot,
    shared_worker,
)
from tasks.render.config import RenderConfig, default_jobs_per_blender

RIG_FILE = "rig.npz"
TEXTURE_FILE = "texture.png"
JOB_FILE = "job.json"
# output file names inside out_dir; the silent video is muxed into the talk video later
VIDEO_FILE = "frames.mp4"
GLB_FILE = "avatar.glb"
BLEND_FILE = "avatar.blend"
POSTER_FILE = "poster.png"
FRAMES_DIR = "frames"


def job_outputs(settings: RenderConfig) -> dict[str, str | None]:
    """The job's "outputs" entry: file names inside out_dir, None for what is not wanted."""
    return {
        "video": VIDEO_FILE,
        "glb": GLB_FILE if settings.write_glb else None,
        "blend": BLEND_FILE if settings.write_blend else None,
        "poster": POSTER_FILE,
        "frames_dir": FRAMES_DIR if settings.keep_frames else None,
    }


def write_job(
    job_dir: Path | str,
    *,
    vertices: np.ndarray,
    faces: np.ndarray,
    uv_photo: np.ndarray,
    uv_canonical: np.ndarray,
    deltas: np.ndarray,
    pivot: np.ndarray,
    texture: np.ndarray,
    weights: np.ndarray,
    head_pose: np.ndarray,
    settings: RenderConfig,
    fps: int,
    resolution: int,
    seed: int,
    shape_key_names: Sequence[str] = ARKIT_NAMES,
    poster_frame: int | None = None,
    out_dir: Path | str | None = None,
    outputs: dict[str, str | None] | None = None,
) -> Path:
    """Write rig.npz, texture.png and job.json into `job_dir`; returns the job file's path.

    `out_dir` defaults to `job_dir`. `poster_frame` (1-based) defaults to the middle frame.
    `outputs` (the job's "outputs" entry) defaults to everything the settings switch on.
    Array shapes follow the rig contract: vertices (V,3), faces (F,3), uv_* (V,2),
    deltas (K,V,3), pivot (3,), texture (S+B,S,3) uint8, weights (T,K), head_pose (T,6).
    """
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    out_dir = job_dir if out_dir is None else Path(out_dir)
    arrays = {
        "vertices": np.asarray(vertices, dtype=np.float32),
        "faces": np.asarray(faces, dtype=np.int32),
        "uv_photo": np.asarray(uv_photo, dtype=np.float32),
        "uv_canonical": np.asarray(uv_canonical, dtype=np.float32),
        "deltas": np.asarray(deltas, dtype=np.float32),
        "weights": np.asarray(weights, dtype=np.float32),
        "head_pose": np.asarray(head_pose, dtype=np.float32),
        "pivot": np.asarray(pivot, dtype=np.float32),
    }
    n_vertices, n_shapes = len(arrays["vertices"]), len(shape_key_names)
    n_frames = len(arrays["weights"])
    expected_shapes = {
        "vertices": (n_vertices, 3), "uv_photo": (n_vertices, 2), "uv_canonical": (n_vertices, 2),
        "deltas": (n_shapes, n_vertices, 3), "weights": (n_frames, n_shapes),
        "head_pose": (n_frames, 6), "pivot": (3,),
    }
    for key, shape in expected_shapes.items():
        if arrays[key].shape != shape:
            raise ValueError(f"{key} has shape {arrays[key].shape}, expected {shape}")
    if arrays["faces"].ndim != 2 or arrays["faces"].shape[1] != 3:
        raise ValueError(f"faces have shape {arrays['faces'].shape}, expected (F, 3)")
    if n_frames < 1:
        raise ValueError("an animation needs at least one frame")
    texture = np.asarray(texture)
    if texture.dtype != np.uint8 or texture.ndim != 3 or texture.shape[2] != 3 or texture.shape[0] <= texture.shape[1]:
        raise ValueError(f"texture must be uint8 (S+B, S, 3) with B > 0, got {texture.dtype} {texture.shape}")
    if poster_frame is None:
        poster_frame = (n_frames + 1) // 2

    np.savez(job_dir / RIG_FILE, **arrays)
    Image.fromarray(texture, mode="RGB").save(job_dir / TEXTURE_FILE)
    job = {
        "rig_npz": str((job_dir / RIG_FILE).resolve()),
        "texture_png": str((job_dir / TEXTURE_FILE).resolve()),
        "shape_key_names": list(shape_key_names),
        "fps": int(fps),
        "resolution": int(resolution),
        "mode": settings.mode,
        "cycles_samples": int(settings.cycles_samples),
        "cycles_device": settings.cycles_device,
        "seed": int(seed),
        "out_dir": str(out_dir.resolve()),
        "outputs": job_outputs(settings) if outputs is None else outputs,
        "poster_frame": int(poster_frame),
        "video_quality": settings.video_quality,
        "video_gop_size": int(settings.video_gop_size),
    }
    job_path = job_dir / JOB_FILE
    job_path.write_text(json.dumps(job, indent=2), encoding="utf-8")
    return job_path


def run_blender_job(job_path: Path | str, timeout_s: float, jobs_per_blender: int | None = None) -> dict:
    """Run blender_job.py on a job file in a Blender process, never in this process (bpy is bound
    to the process that imports it); Blender's output goes to out_dir/blender.log. Returns
    result.json's content; raises RenderError with the log's end on failure or timeout.

    The job goes to this process's long-lived Blender, which is replaced after `jobs_per_blender`
    jobs (default: AVATARFLOW_JOBS_PER_BLENDER, else 50) or after any failure;
    `jobs_per_blender=1` runs it in a fresh one-shot process instead."""
    if jobs_per_blender is None:
        jobs_per_blender = default_jobs_per_blender()
    release_freed_memory()  # this process waits through the render: what earlier stages freed goes back first
    if jobs_per_blender == 1:  # below 1, BlenderWorker.run refuses it
        return run_one_shot(job_path, timeout_s)
    return shared_worker().run(job_path, timeout_s, jobs_per_blender)


def _run_tool(command: list[str], what: str) -> str:
    """Run ffmpeg/ffprobe; returns stdout, raises RenderError with stderr on failure."""
    if shutil.which(command[0]) is None:
        raise RenderError(f"{command[0]} is not installed; it is needed to {what}")
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RenderError(f"{command[0]} could not {what} (exit {completed.returncode}): "
                          f"{completed.stderr.strip()[-2000:]}")
    return completed.stdout


def _rate(text: str | None) -> float | None:
    """An ffprobe rate like "25/1" as a float (None when absent or 0/0)."""
    if not text or text in ("0/0", "N/A"):
        return None
    return float(Fraction(text))


def probe_video(path: Path | str) -> dict:
    """Describe a video file with ffprobe: codec, pix_fmt, width, height, fps, n_frames,
    duration (s), audio_codec, audio_sample_rate, audio_channels (audio_* None without sound)."""
    path = Path(path)
    if not path.is_file():
        raise RenderError(f"no video at {path}")
    info = json.loads(_run_tool(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format", str(path)],
        f"probe {path}"))
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise RenderError(f"{path} holds no video stream")
    n_frames = int(video["nb_frames"]) if str(video.get("nb_frames", "")).isdigit() else None
    if n_frames is None:  # containers without a frame count: decode and count
        counted = json.loads(_run_tool(
            ["ffprobe", "-v", "error", "-of", "json", "-count_frames", "-select_streams", "v:0",
             "-show_entries", "stream=nb_read_frames", str(path)], f"count frames of {path}"))
        n_frames = int(counted["streams"][0]["nb_read_frames"])
    duration = info.get("format", {}).get("duration")
    return {
        "codec": video.get("codec_name"),
        "pix_fmt": video.get("pix_fmt"),
        "width": int(video["width"]),
        "height": int(video["height"]),
        "fps": _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        "n_frames": n_frames,
        "duration": float(duration) if duration not in (None, "N/A") else None,
        "audio_codec": audio.get("codec_name") if audio else None,
        "audio_sample_rate": int(audio["sample_rate"]) if audio else None,
        "audio_channels": int(audio["channels"]) if audio else None,
    }


def fit_audio_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim or zero-pad audio (N,) or (N, C) to exactly n_samples along time."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) >= n_samples:
        return audio[:n_samples]
    padding = [(0, n_samples - len(audio))] + [(0, 0)] * (audio.ndim - 1)
    return np.pad(audio, padding)


WAV_BLOCK_SAMPLES = 1 << 20


def _checked_block(block: np.ndarray) -> np.ndarray:
    """A block of float samples clipped to [-1, 1]; ValueError when it holds NaN or Inf."""
    if not np.all(np.isfinite(block)):
        raise ValueError("audio holds NaN or infinite samples")
    return np.clip(block, -1.0, 1.0)


def write_wav(path: Path | str, audio: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV from float audio in [-1, 1] (clipped), mono (N,) or (N, C)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2 or audio.shape[1] < 1:
        raise ValueError(f"audio must be (N,) or (N, C), got {audio.shape}")
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(audio.shape[1])
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        for first in range(0, len(audio), WAV_BLOCK_SAMPLES):  # blocks: a long clip is never copied whole
            try:
                block = _checked_block(audio[first:first + WAV_BLOCK_SAMPLES])
            except ValueError:
                out.close()
                path.unlink(missing_ok=True)  # no half-written file left behind
                raise
            out.writeframes(np.round(block * 32767.0).astype("<i2").tobytes())
    return path


# Audio samples encoded at a time while muxing: a long clip is never converted whole.
MUX_AUDIO_BLOCK = 16384
# Audio is muxed this far (s) ahead of each video packet, so the two streams interleave in the file.
MUX_AUDIO_LEAD_S = 0.5
AUDIO_BIT_RATE = 128_000


def _silent_video_facts(path: Path) -> tuple[float, int, bool]:
    """(fps, frame count, whether its packets can be copied as they are: H.264 in yuv420p, in a container
    that counts its frames, such as Blender's MP4) of a rendered video."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = int(stream.frames or 0)
            copyable = bool(frames) and stream.codec_context.name == "h264" and \
                stream.codec_context.pix_fmt == "yuv420p"
            if not frames:  # Matroska and others keep no count: count the packets (nothing decoded)
                frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            return fps, frames, copyable
    except (av.error.FFmpegError, IndexError) as error:
        raise RenderError(f"{path} is not a readable video: {error}") from None


def _mux_copied_video(video_path: Path, audio: np.ndarray, sample_rate: int, out_path: Path) -> None:
    """The video's packets copied and the audio encoded as AAC, in one process: no ffmpeg to start,
    no WAV to write. Packets interleave by time; the moov atom goes first (+faststart)."""
    with av.open(str(video_path)) as source, \
            av.open(str(out_path), "w", format="mp4", options={"movflags": "+faststart"}) as sink:
        video_in = source.streams.video[0]
        video_out = sink.add_stream_from_template(video_in)
        audio_out = sink.add_stream("aac", rate=sample_rate, layout="mono")
        audio_out.bit_rate = AUDIO_BIT_RATE
        samples = audio if audio.ndim == 1 else audio.mean(axis=1)  # the store's speech is mono already
        written = 0

        def audio_until(seconds: float) -> None:
            nonlocal written
            end = min(samples.size, int(np.ceil(seconds * sample_rate)))
            while written < end:
                block = _checked_block(np.asarray(samples[written:min(end, written + MUX_AUDIO_BLOCK)], np.float32))
                frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, written, Fraction(1, sample_rate)
                for packet in audio_out.encode(frame):
                    sink.mux(packet)
                written += block.size

        for packet in source.demux(video_in):
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            audio_until(float(packet.dts * packet.time_base) + MUX_AUDIO_LEAD_S)
            packet.stream = video_out
            sink.mux(packet)
        audio_until(samples.size / sample_rate)
        for packet in audio_out.encode(None):
            sink.mux(packet)


def _mux_reencoded_video(video_path: Path, audio: np.ndarray, sample_rate: int, out_path: Path) -> None:
    """Any other video is re-encoded by ffmpeg, the audio going in as a WAV."""
    wav_path = out_path.with_suffix(".wav")
    write_wav(wav_path, audio, sample_rate)
    try:
        _run_tool(
            ["ffmpeg", "-y", "-v", "error", "-i", str(video_path), "-i", str(wav_path),
             "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18",
             "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(out_path)],
            f"mux audio into {out_path}")
    finally:
        wav_path.unlink(missing_ok=True)


def mux_audio(video_path: Path | str, audio_f32: np.ndarray, sample_rate: int, out_path: Path | str) -> Path:
    """MP4 with the video's H.264 stream copied (re-encoded to yuv420p only if it is not) and
    the audio as AAC, moov atom first. The audio is trimmed or padded to exactly
    n_frames / fps seconds, so the streams end together; the duration is checked."""
    video_path, out_path = Path(video_path), Path(out_path)
    if not video_path.is_file():
        raise RenderError(f"no video at {video_path}")
    fps, n_frames, copyable = _silent_video_facts(video_path)
    if not fps or not n_frames:
        raise RenderError(f"{video_path} has no frame rate or no frames")
    video_seconds = n_frames / fps
    audio = fit_audio_length(audio_f32, int(round(video_seconds * sample_rate)))
    try:
        if copyable:
            _mux_copied_video(video_path, audio, sample_rate, out_path)
        else:
            _mux_reencoded_video(video_path, audio, sample_rate, out_path)
    except ValueError:  # bad samples: no half-written file left behind
        out_path.unlink(missing_ok=True)
        raise
    with av.open(str(out_path)) as muxed:
        duration = muxed.duration / av.time_base if muxed.duration is not None else None
    if duration is None or abs(duration - video_seconds) > 1.0 / fps:
        out_path.unlink(missing_ok=True)
        raise RenderError(f"{out_path} lasts {duration}s, the video {video_seconds:.3f}s")
    return out_path
