"""Does a rendered video show a face? MediaPipe looks at frames spread evenly over the clip, as a
viewer would; a generated identity whose render shows no face in most of them is no avatar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.quality.metrics import detect_landmarks


@dataclass(frozen=True)
class VideoFaceCheck:
    """How many of the checked frames show a face."""

    frames: int
    """Frames in the video."""
    checked: int
    """Frames looked at (spread evenly; all of them in a shorter clip)."""
    with_face: int
    min_share: float

    @property
    def share(self) -> float:
        return self.with_face / self.checked if self.checked else 0.0

    @property
    def passed(self) -> bool:
        return self.checked > 0 and self.share >= self.min_share

    def as_record(self) -> dict:
        return {"frames": self.frames, "checked": self.checked, "with_face": self.with_face,
                "share": round(self.share, 4), "min_share": self.min_share}


def spread_indices(n_frames: int, count: int) -> np.ndarray:
    """`count` frame indices spread evenly from the first frame to the last (every frame when the
    clip is shorter)."""
    if n_frames <= count:
        return np.arange(n_frames)
    return np.unique(np.round(np.linspace(0, n_frames - 1, count)).astype(int))


def faces_in_frames(frames_u8: np.ndarray, upscale_to: int = 256) -> np.ndarray:
    """Bool per frame (N×H×W×3 uint8): MediaPipe finds a face (small frames upscaled first)."""
    if len(frames_u8) == 0:
        return np.zeros(0, bool)
    return np.array([points is not None for points in detect_landmarks(np.asarray(frames_u8), upscale_to)])


def read_frames(path: str | Path, indices: np.ndarray) -> np.ndarray:
    """The frames at `indices` of a video, decoded in one pass (only those kept in memory)."""
    import av

    wanted, kept = set(int(i) for i in indices), []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                kept.append(frame.to_ndarray(format="rgb24"))
    return np.stack(kept) if kept else np.zeros((0, 1, 1, 3), np.uint8)


def count_frames(path: str | Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.demux(stream) if _.size)


def check_video_faces(path: str | Path, min_frames: int = 50, min_share: float = 0.95) -> VideoFaceCheck:
    """Look for a face on `min_frames` frames spread over the video (all frames of a shorter one)."""
    if not 0.0 < min_share <= 1.0 or min_frames < 1:
        raise ValueError(f"min_frames must be ≥ 1 and min_share in (0, 1], got {min_frames}, {min_share}")
    n_frames = count_frames(path)
    frames = read_frames(path, spread_indices(n_frames, min_frames))
    found = faces_in_frames(frames)
    return VideoFaceCheck(frames=n_frames, checked=len(found), with_face=int(found.sum()), min_share=min_share)
