"""Face tracking over a video: MediaPipe's 478 landmarks per frame, face sharpness, dropped frames,
and the score that picks a video's best frame as a portrait.

Landmarks use the convention of tasks/reconstruct/landmarks.py: (x·W, y·H, z·W) in the upright
frame's pixels. Unlike that per-image wrapper, one MediaPipe graph runs in tracking mode over the
whole clip: it detects once and follows the face, several times faster than a detection per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from PIL import Image

from tasks.capture.config import CaptureConfig
from tasks.capture.solve import STABLE_POINTS, matrix_to_euler_xyz, similarity_fit, video_to_world
from tasks.capture.video import VideoFrame
from tasks.reconstruct.topology import N_LANDMARKS

# Side (pixels) of the grey face crop whose Laplacian variance measures sharpness.
_SHARPNESS_SIDE = 96
# Eyelid pairs (upper, lower) and eye corners of each eye; inner-lip midpoints; inner mouth corners.
EYE_LIDS = ((159, 145), (386, 374))
EYE_CORNERS = ((33, 133), (362, 263))
INNER_LIPS = (13, 14)
MOUTH_CORNERS = (78, 308)


@dataclass(frozen=True)
class TrackedVideo:
    """Per-frame tracking results of one video."""

    landmarks: np.ndarray
    """(T, 478, 3) float32 video pixels; NaN where no face was found."""

    times: np.ndarray
    """(T,) float64 seconds from the first frame."""

    found: np.ndarray
    """(T,) bool: MediaPipe found a face."""

    sharpness: np.ndarray
    """(T,) float32 variance of the Laplacian of the grey face crop (0 where no face)."""

    size: tuple[int, int]
    """(width, height) of the upright video frames in pixels."""


class FaceTracker:
    """MediaPipe face mesh in tracking mode (one face, iris landmarks on); use as a context manager."""

    def __init__(self, config: CaptureConfig = CaptureConfig()):
        from mediapipe.python.solutions import face_mesh as mp_face_mesh

        self._mesh = mp_face_mesh.FaceMesh(
            static_image_mode=False, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=config.min_detection_confidence,
            min_tracking_confidence=config.min_tracking_confidence)

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self._mesh.close()

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """(478, 3) float32 landmarks in the frame's pixels, or None when no face is found."""
        height, width = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        if not result.multi_face_landmarks:
            return None
        points = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
        if points.shape != (N_LANDMARKS, 3):
            return None
        return points * np.array([width, height, width], np.float32)


def face_sharpness(rgb: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of the face's grey crop, resampled to a fixed size, so the value
    compares frames of one clip whatever the face's size."""
    height, width = rgb.shape[:2]
    x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 0.0
    grey = Image.fromarray(rgb[y0:y1, x0:x1]).convert("L").resize((_SHARPNESS_SIDE, _SHARPNESS_SIDE),
                                                                   Image.BILINEAR)
    g = np.asarray(grey, np.float32)
    laplacian = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(laplacian.var())


def track_frames(frames: Iterable[VideoFrame], config: CaptureConfig = CaptureConfig()) -> TrackedVideo:
    """Track the face through decoded frames (streamed; only landmarks are kept)."""
    landmarks, times, found, sharpness = [], [], [], []
    size = (0, 0)
    with FaceTracker(config) as tracker:
        for frame in frames:
            points = tracker(frame.rgb)
            times.append(frame.time)
            height, width = frame.rgb.shape[:2]
            size = (int(round(width / frame.scale)), int(round(height / frame.scale)))
            if points is None:
                landmarks.append(np.full((N_LANDMARKS, 3), np.nan, np.float32))
                found.append(False)
                sharpness.append(0.0)
                continue
            sharpness.append(face_sharpness(frame.rgb, points))
            landmarks.append(points / np.float32(frame.scale))
            found.append(True)
    return TrackedVideo(landmarks=np.asarray(landmarks, np.float32).reshape(-1, N_LANDMARKS, 3),
                        times=np.asarray(times, np.float64), found=np.asarray(found, bool),
                        sharpness=np.asarray(sharpness, np.float32), size=size)


def usable_frames(found: np.ndarray, sharpness: np.ndarray, blur_ratio: float) -> np.ndarray:
    """(T,) bool: a face was found and it is not blurred (sharpness at least blur_ratio × the median)."""
    found = np.asarray(found, bool)
    if not found.any():
        return found.copy()
    typical = float(np.median(np.asarray(sharpness)[found]))
    return found & (np.asarray(sharpness) >= blur_ratio * typical)


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """(T,) mean lid gap over eye width of both eyes."""
    points = np.asarray(landmarks, np.float64)
    ratios = []
    for (upper, lower), (a, b) in zip(EYE_LIDS, EYE_CORNERS):
        gap = np.linalg.norm(points[:, upper, :2] - points[:, lower, :2], axis=-1)
        ratios.append(gap / np.linalg.norm(points[:, a, :2] - points[:, b, :2], axis=-1))
    return np.mean(ratios, axis=0)


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap over the inner mouth width."""
    points = np.asarray(landmarks, np.float64)
    gap = np.linalg.norm(points[:, INNER_LIPS[0], :2] - points[:, INNER_LIPS[1], :2], axis=-1)
    return gap / np.linalg.norm(points[:, MOUTH_CORNERS[0], :2] - points[:, MOUTH_CORNERS[1], :2], axis=-1)


def head_angles(landmarks: np.ndarray, reference: np.ndarray, points: np.ndarray = STABLE_POINTS) -> np.ndarray:
    """(T, 3) (pitch, yaw, roll) radians of each frame's face against a frontal (N, 3) reference
    shape in world axes (x right, y up, z toward the camera), fitted on `points`."""
    _, rotation, _ = similarity_fit(reference[points], video_to_world(landmarks)[:, points])
    return matrix_to_euler_xyz(rotation)


def portrait_scores(landmarks: np.ndarray, usable: np.ndarray, sharpness: np.ndarray,
                    reference: np.ndarray, frontal_sigma_deg: float = 8.0) -> np.ndarray:
    """(T,) score in [0, 1] of each frame as the avatar's portrait: frontal × eyes open × mouth
    closed × sharp. Frames that are not usable score 0."""
    usable = np.asarray(usable, bool)
    scores = np.zeros(len(usable))
    if not usable.any():
        return scores
    points = np.asarray(landmarks, np.float64)[usable]
    angles = np.degrees(head_angles(points, reference))
    frontal = np.exp(-0.5 * (angles[:, 0] ** 2 + angles[:, 1] ** 2 + angles[:, 2] ** 2) / frontal_sigma_deg ** 2)
    eyes = eye_openness(points)
    eyes_open = np.clip(eyes / max(np.percentile(eyes, 90), 1e-6), 0.0, 1.0)
    # An inner-lip gap of 5% of the mouth's width already shows the cavity.
    mouth_closed = np.exp(-0.5 * (lip_gap(points) / 0.05) ** 2)
    sharp = np.asarray(sharpness, np.float64)[usable]
    sharp = np.sqrt(np.clip(sharp / max(sharp.max(), 1e-9), 0.0, 1.0))
    scores[usable] = frontal * eyes_open * mouth_closed * sharp
    return scores
