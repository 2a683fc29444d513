"""Judge a rendered talking video as a viewer would: does MediaPipe find a face in (nearly) every
frame, and do the lips open with speech and close in silence? Used by the flow test and by
bench/lipsync_check.py."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
FOREHEAD, CHIN = 10, 152


def video_frames_and_audio(path: Path) -> tuple[list[np.ndarray], float, np.ndarray, int]:
    with av.open(str(path)) as container:
        fps = float(container.streams.video[0].average_rate)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        chunks = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in resampler.resample(f)]
    return frames, fps, np.concatenate(chunks) if chunks else np.zeros(0, np.float32), 16000


def lip_gaps(frames: list[np.ndarray]) -> np.ndarray:
    """Inner-lip gap over face height per frame; NaN where MediaPipe finds no face."""
    import mediapipe as mp

    gaps = np.full(len(frames), np.nan)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1) as mesh:
        for i, frame in enumerate(frames):
            found = mesh.process(frame).multi_face_landmarks
            if found:
                points = found[0].landmark
                face = abs(points[CHIN].y - points[FOREHEAD].y)
                gaps[i] = abs(points[LOWER_INNER_LIP].y - points[UPPER_INNER_LIP].y) / max(face, 1e-6)
    return gaps


def frame_loudness(audio: np.ndarray, sample_rate: int, n_frames: int, fps: float) -> np.ndarray:
    hop = sample_rate / fps
    rms = np.array([np.sqrt(np.mean(audio[int(i * hop):int((i + 1) * hop)] ** 2) + 1e-12) for i in range(n_frames)])
    return 20 * np.log10(rms + 1e-9)


def check(path: Path) -> dict:
    frames, fps, audio, sample_rate = video_frames_and_audio(path)
    gaps = lip_gaps(frames)
    loudness = frame_loudness(audio, sample_rate, len(frames), fps)
    found = ~np.isnan(gaps)
    speaking = loudness > loudness.max() - 25
    silent = loudness < loudness.max() - 40
    result = {"frames": len(frames), "face_found": float(found.mean())}
    if found.sum() > 3:
        result["gap_speaking"] = float(np.nanmean(gaps[speaking & found])) if (speaking & found).any() else None
        result["gap_silent"] = float(np.nanmean(gaps[silent & found])) if (silent & found).any() else None
        result["gap_loudness_corr"] = float(np.corrcoef(gaps[found], loudness[found])[0, 1])
    return result
