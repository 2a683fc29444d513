"""Bounded decoding of a driving video with PyAV: its frames (upright, with their timestamps) and
its sound. Corrupt, empty, huge or overlong files and files without a video stream raise
AvatarInputError with one line naming the file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from stores.location import DataLocation
from tasks.capture.config import CaptureConfig
from tasks.common.errors import AvatarInputError
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import InputFile, as_input_file, check_input_file, decodable_file


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame."""

    index: int
    """Position in presentation order, from 0."""

    time: float
    """Seconds from the video's first frame (from the timestamps, so variable frame rates are exact)."""

    rgb: np.ndarray
    """(H, W, 3) uint8, upright (the stream's display rotation applied)."""

    scale: float
    """Decoded size over the stream's own size (below 1 when scaled down for tracking)."""


def _unreadable(name: str, error: Exception) -> AvatarInputError:
    """The one-line error for a video PyAV cannot decode (FFmpegError, OSError or ValueError)."""
    detail = (error.strerror or error) if isinstance(error, av.error.FFmpegError) else error
    return AvatarInputError(f"{name}: not a readable video or corrupt ({detail})")


def _video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    stream = next((s for s in container.streams if s.type == "video"), None)
    if stream is None:
        raise AvatarInputError(f"{name}: no video stream in the file")
    return stream


def _check_stream(container, stream, name: str, config: CaptureConfig, max_seconds: float) -> None:
    width, height = stream.codec_context.width, stream.codec_context.height
    if width and height and width * height > config.max_frame_pixels:
        raise AvatarInputError(f"{name}: video frames are too large ({width}x{height} > "
                               f"{config.max_frame_pixels} pixels)")
    declared = None
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        declared = float(stream.duration * stream.time_base)
    elif container.duration is not None and container.duration > 0:
        declared = container.duration / av.time_base
    # Reject an overlong video from its header, before decoding it; the decoded time is checked too.
    if declared is not None and declared > max_seconds + 0.5:
        raise AvatarInputError(f"{name}: video is too long ({declared:.1f} s > {max_seconds:g} s)")


def _upright(frame: av.VideoFrame, array: np.ndarray) -> np.ndarray:
    # PyAV reports the display matrix's counter-clockwise rotation; phones store portrait video this way.
    quarter_turns = int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(array, quarter_turns)) if quarter_turns else array


def iter_frames(path: Path, name: str, config: CaptureConfig, max_seconds: float,
                max_side: int | None = None, only: int | None = None) -> Iterator[VideoFrame]:
    """Decode the first video stream frame by frame (never the whole clip in memory).

    Frames are scaled down so their longer side is at most max_side; with `only`, just the frame
    at that index is converted and yielded. Raises AvatarInputError past max_seconds of video or
    config.max_fps frames per second of it.
    """
    max_frames = int(np.ceil(max_seconds * config.max_fps)) + 1
    try:
        with av.open(str(path), mode="r") as container:
            stream = _video_stream(container, name)
            _check_stream(container, stream, name, config, max_seconds)
            stream.thread_type = "AUTO"
            start = None
            index = 0
            for frame in container.decode(stream):
                stamp = frame.time if frame.pts is not None else None
                if stamp is None:  # no timestamps: fall back on the declared rate
                    rate = float(stream.average_rate or stream.guessed_rate or 25)
                    stamp = index / rate
                start = stamp if start is None else start
                time = stamp - start
                if time > max_seconds + 0.5 or index >= max_frames:
                    raise AvatarInputError(f"{name}: video is too long (more than {max_seconds:g} s)")
                if only is not None and index != only:
                    index += 1
                    continue
                scale = 1.0
                if max_side is not None and max(frame.width, frame.height) > max_side:
                    scale = max_side / max(frame.width, frame.height)
                    rgb = frame.to_ndarray(width=max(2, int(round(frame.width * scale)) // 2 * 2),
                                           height=max(2, int(round(frame.height * scale)) // 2 * 2),
                                           format="rgb24")
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                yield VideoFrame(index=index, time=float(time), rgb=_upright(frame, rgb), scale=scale)
                if only is not None:
                    return
                index += 1
            if index == 0:
                raise AvatarInputError(f"{name}: the video has no frames")
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise _unreadable(name, error) from error


def read_frame(path: Path, name: str, index: int, config: CaptureConfig, max_seconds: float) -> np.ndarray:
    """The frame at a presentation index, full size and upright."""
    for frame in iter_frames(path, name, config, max_seconds, only=index):
        return frame.rgb
    raise AvatarInputError(f"{name}: frame {index} could not be decoded again")


def load_video_sound(path: str | os.PathLike | DataLocation, sample_rate: int, max_seconds: float,
                     config: CaptureConfig = CaptureConfig()) -> tuple[np.ndarray, list[str]]:
    """A driving video's sound (see _decode_sound), after the file checks every input gets."""
    source = as_input_file(path)
    check_video_file(source, config)
    with decodable_file(source) as local:
        return _decode_sound(local, source.name, sample_rate, max_seconds, config)


def check_video_file(source: InputFile, config: CaptureConfig) -> None:
    """Found, a regular file, not empty, at most config.max_video_bytes; AvatarInputError otherwise."""
    check_input_file(source, IngestConfig(max_file_bytes=config.max_video_bytes))


def _decode_sound(path: Path, name: str, sample_rate: int, max_seconds: float,
                  config: CaptureConfig) -> tuple[np.ndarray, list[str]]:
    """The video's sound as mono float32 at sample_rate, from its first frame to its end.

    The audio is shifted so sample 0 plays with the first video frame, and padded or cut to the
    video's length (from the packets' timestamps, so a variable frame rate is honoured). A video
    without an audio stream gives silence of its length. Returns (samples, warnings).
    """
    warnings: list[str] = []
    chunks: list[np.ndarray] = []
    audio_start = None
    first_video, last_video_end = None, None
    try:
        with av.open(str(path), mode="r") as container:
            video = _video_stream(container, name)
            _check_stream(container, video, name, config, max_seconds)
            audio = next((s for s in container.streams if s.type == "audio"), None)
            streams = [video] + ([audio] if audio is not None else [])
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate) if audio else None
            decoded = 0
            for packet in container.demux(*streams):
                if packet.stream.type == "video":
                    if packet.pts is None:
                        continue
                    begin = float(packet.pts * packet.time_base)
                    end = begin + float((packet.duration or 0) * packet.time_base)
                    first_video = begin if first_video is None else min(first_video, begin)
                    last_video_end = end if last_video_end is None else max(last_video_end, end)
                    continue
                for frame in packet.decode():
                    if audio_start is None and frame.pts is not None:
                        audio_start = float(frame.pts * frame.time_base)
                    for out in resampler.resample(frame):
                        chunk = out.to_ndarray().reshape(-1)
                        chunks.append(chunk)
                        decoded += chunk.size
                if decoded > (max_seconds + 1.0) * sample_rate:
                    raise AvatarInputError(f"{name}: video is too long (more than {max_seconds:g} s)")
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise _unreadable(name, error) from error
    if first_video is None:
        raise AvatarInputError(f"{name}: the video has no frames")
    seconds = max(last_video_end - first_video, 1.0 / sample_rate)
    if seconds > max_seconds + 0.5:
        raise AvatarInputError(f"{name}: video is too long ({seconds:.1f} s > {max_seconds:g} s)")
    n_samples = int(round(seconds * sample_rate))
    sound = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio_start is None:
        warnings.append("the driving video has no sound; the output has a silent track")
        return np.zeros(n_samples, np.float32), warnings
    # Sample 0 must play with the first frame: drop audio before it, pad silence if it starts later.
    lead = int(round((audio_start - first_video) * sample_rate))
    sound = sound[-lead:] if lead < 0 else np.concatenate([np.zeros(lead, np.float32), sound])
    sound = np.pad(sound[:n_samples], (0, max(0, n_samples - sound.size)))
    if not np.all(np.isfinite(sound)):
        raise AvatarInputError(f"{name}: the video's sound decodes to invalid sample values")
    if not np.any(np.abs(sound) > 1e-4):
        warnings.append("the driving video's sound is silent")
    return sound, warnings
