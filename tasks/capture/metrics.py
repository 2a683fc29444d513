"""How closely a rendered avatar follows its driving video: Pearson r of the inner-lip gap, eye
openness, and head yaw and pitch, measured on both by MediaPipe (pure numpy on landmarks)."""

from __future__ import annotations

import numpy as np

from tasks.capture.solve import resample
from tasks.capture.tracking import eye_openness, head_angles, lip_gap


def face_signals(landmarks: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """(T,) series of one clip's (T, 478, 3) landmarks: lip gap, eye openness, yaw and pitch (degrees)."""
    angles = np.degrees(head_angles(landmarks, reference))
    return {"lip_gap": lip_gap(landmarks), "eye_openness": eye_openness(landmarks),
            "yaw": angles[:, 1], "pitch": angles[:, 0]}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two series (NaN-free); 0 when either is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def follow_correlations(driver: np.ndarray, driver_times: np.ndarray, driver_found: np.ndarray,
                        render: np.ndarray, render_times: np.ndarray, render_found: np.ndarray,
                        reference: np.ndarray) -> dict[str, float]:
    """Pearson r per signal between a render and its driver, compared at the render's frame times
    (the driver's series interpolated there, frames without a face on either side left out)."""
    driver_found, render_found = np.asarray(driver_found, bool), np.asarray(render_found, bool)
    inside = render_found & (render_times <= driver_times[driver_found][-1] + 1e-6)
    ours = face_signals(render[inside], reference)
    theirs = face_signals(driver[driver_found], reference)
    result = {}
    for key, series in ours.items():
        expected = resample(theirs[key][:, None], driver_times[driver_found], render_times[inside])[:, 0]
        result[key] = pearson(series, expected)
    result["frames"] = int(inside.sum())
    result["driver_yaw_std_deg"] = float(theirs["yaw"].std())
    result["driver_pitch_std_deg"] = float(theirs["pitch"].std())
    return result
