"""Judge a rendered face's expression as a viewer would, through MediaPipe's face mesh on the video: how high
the mouth corners sit, how high the brows sit above the eyes, and how far the inner lips part, each over the
inter-ocular distance. Used by the emotion render test and bench/emotion_check.py."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# MediaPipe face-mesh indices ("left"/"right" are the subject's).
EYE_OUTER_RIGHT, EYE_OUTER_LEFT = 33, 263
EYE_CORNERS = (33, 133, 362, 263)
MOUTH_CORNERS = (61, 291)
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
BROWS_UPPER = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)


def video_frames(path: Path) -> tuple[list[np.ndarray], float]:
    """RGB frames of a video and its frame rate."""
    with av.open(str(path)) as container:
        fps = float(container.streams.video[0].average_rate)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return frames, fps


def face_landmarks(frames: list[np.ndarray]) -> np.ndarray:
    """(T, 478, 2) landmark pixels per frame (y down); NaN where MediaPipe finds no face."""
    import mediapipe as mp

    points = np.full((len(frames), 478, 2), np.nan)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1) as mesh:
        for i, frame in enumerate(frames):
            found = mesh.process(np.ascontiguousarray(frame)).multi_face_landmarks
            if found:
                height, width = frame.shape[:2]
                points[i] = [(p.x * width, p.y * height) for p in found[0].landmark]
    return points


def expression_measures(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame measures in inter-ocular units (image y grows downwards, so "lift" is an upward distance):

    corner_lift: the inner-lip midpoint's height below the mouth corners (corners up → larger);
    brow_lift: the brows' mean height above the eye corners;
    lip_gap: the distance between the inner lips at the midline.
    """
    pts = np.asarray(landmarks, np.float64)
    iod = np.linalg.norm(pts[:, EYE_OUTER_LEFT] - pts[:, EYE_OUTER_RIGHT], axis=1)
    y = pts[..., 1]
    lip_mid = 0.5 * (y[:, UPPER_INNER_LIP] + y[:, LOWER_INNER_LIP])
    return {
        "iod_px": iod,
        "corner_lift": (lip_mid - y[:, list(MOUTH_CORNERS)].mean(axis=1)) / iod,
        "brow_lift": (y[:, list(EYE_CORNERS)].mean(axis=1) - y[:, list(BROWS_UPPER)].mean(axis=1)) / iod,
        "lip_gap": np.abs(y[:, LOWER_INNER_LIP] - y[:, UPPER_INNER_LIP]) / iod,
    }


def phone_frames(phonemes: list[tuple[str, float, float]], visemes: set[str], fps: float, n_frames: int) -> np.ndarray:
    """Frame shown at the centre of each phoneme whose viseme(s) lie in `visemes` (a viewer's moment)."""
    from tasks.animate.visemes import phoneme_visemes

    frames = []
    for symbol, start, end in phonemes:
        found = phoneme_visemes(symbol)
        if found and set(found) <= visemes and end > start:
            frames.append(int(round(0.5 * (start + end) * fps)))
    frames = np.asarray(frames, np.int64)
    return frames[(frames >= 0) & (frames < n_frames)]


def measure_video(path: Path, phonemes: list[tuple[str, float, float]]) -> dict[str, float]:
    """Medians over a rendered clip: corner_lift, brow_lift, the lip gap at /p b m/ and at open vowels, and
    the share of frames with a face."""
    frames, fps = video_frames(path)
    measures = expression_measures(face_landmarks(frames))
    found = ~np.isnan(measures["iod_px"])
    bilabial = phone_frames(phonemes, {"PP"}, fps, len(frames))
    open_vowel = phone_frames(phonemes, {"aa"}, fps, len(frames))
    return {
        "frames": len(frames),
        "detect": float(found.mean()),
        "corner_lift": float(np.nanmedian(measures["corner_lift"])),
        "brow_lift": float(np.nanmedian(measures["brow_lift"])),
        "bilabial_gap": float(np.nanmedian(measures["lip_gap"][bilabial])) if bilabial.size else float("nan"),
        "bilabial_gap_max": float(np.nanmax(measures["lip_gap"][bilabial])) if bilabial.size else float("nan"),
        "open_gap": float(np.nanmedian(measures["lip_gap"][open_vowel])) if open_vowel.size else float("nan"),
        "n_bilabial": int(bilabial.size),
        "n_open": int(open_vowel.size),
    }
