"""Idle behaviour of a living face: blinks, slow head sway, saccadic gaze, and speech-linked nods and brow accents.

Everything is drawn from one numpy Generator seeded by the caller, so a seed always gives the same motion. An
IdleMood (built from the row's emotion by tasks/animate/emotion.py) stretches or speeds the rhythms per frame;
without one, or with a neutral one, the motion is exactly the plain idle motion of the same seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from tasks.animate.config import AnimationConfig
from tasks.animate.visemes import frame_times
from tasks.common.arkit import ARKIT_NAMES, INDEX

# Gamma shape of blink intervals: 3 gives the right-skewed spread seen in spontaneous blinking.
_BLINK_INTERVAL_SHAPE = 3.0
# Share of a blink spent closing (the rest reopening, which is slower).
_BLINK_CLOSE_SHARE = 0.35
# Chance that a blink is slightly uneven between the eyes, and how uneven.
_BLINK_ASYMMETRY_CHANCE, _BLINK_ASYMMETRY = 0.1, 0.1
# Chance that a saccade returns the eyes to straight ahead.
_GAZE_CENTRE_CHANCE = 0.4
# Head sway: number of sinusoids and their frequency range (Hz).
_SWAY_COMPONENTS, _SWAY_FREQ_HZ = 3, (0.05, 0.35)


@dataclass(frozen=True)
class IdleMood:
    """Per-frame (T,) modulation of the idle rhythms by an emotion; ones (and a zero offset) change nothing."""

    blink_interval: np.ndarray
    """Multiplier on the time to the next blink (> 1: fewer blinks)."""
    blink_duration: np.ndarray
    """Multiplier on the length of a blink (> 1: slower lids)."""
    sway: np.ndarray
    """Multiplier on the head sway (< 1: a stiller head)."""
    gaze_amplitude: np.ndarray
    """Multiplier on the size of a saccade's target."""
    gaze_hold: np.ndarray
    """Multiplier on how long a gaze is held (< 1: darting eyes)."""
    gaze_vertical: np.ndarray
    """Offset of the vertical gaze (< 0: looking down)."""

    @classmethod
    def plain(cls, n_frames: int) -> "IdleMood":
        ones = np.ones(max(1, int(n_frames)))
        return cls(ones, ones, ones, ones, ones, np.zeros_like(ones))


def _at(series: np.ndarray | None, times: np.ndarray, t: float) -> float:
    """A per-frame series' value at time t (1 where there is no series)."""
    return 1.0 if series is None else float(np.interp(t, times, series))


def derive_seed(base_seed: int, key: str) -> int:
    """A stable 32-bit seed from a base seed and a row key (same inputs → same seed, in any process)."""
    digest = hashlib.sha256(f"{int(base_seed)}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def blink_times(duration_s: float, rng: np.random.Generator, config: AnimationConfig,
                interval_scale: np.ndarray | None = None, frame_t: np.ndarray | None = None) -> np.ndarray:
    """Times (s) of the blink peaks: gamma-distributed gaps with mean blink_mean_interval_s, never closer than
    blink_min_gap_s; with interval_scale (per frame at frame_t), each gap is stretched by its value where it starts."""
    mean = max(config.blink_mean_interval_s, config.blink_min_gap_s + 1e-3)
    # The gap is min_gap + gamma, so the mean of the gamma part is the remainder.
    scale = (mean - config.blink_min_gap_s) / _BLINK_INTERVAL_SHAPE
    times = []
    # The first blink comes after a partial interval, so clips do not all start blinking at the same moment.
    t = rng.uniform(0.2, 1.0) * mean * _at(interval_scale, frame_t, 0.0)
    while t < duration_s:
        times.append(t)
        # The same draws whatever the mood, so a neutral mood reproduces the plain motion exactly.
        t += (config.blink_min_gap_s + rng.gamma(_BLINK_INTERVAL_SHAPE, scale)) * _at(interval_scale, frame_t, t)
    return np.asarray(times, dtype=np.float64)


def blink_envelope(times: np.ndarray, peaks: np.ndarray, config: AnimationConfig, fps: float,
                   duration_scale: np.ndarray | None = None) -> np.ndarray:
    """(T,) eyelid closure in [0, 1]: a quick close and a slower reopening around each peak.

    Peaks are snapped to frame times so every blink fully closes the eyes on at least one frame. With
    duration_scale (per frame), each blink lasts blink_duration_s times its value at the peak.
    """
    envelope = np.zeros_like(times)
    for peak in np.round(peaks * fps) / fps:
        duration = config.blink_duration_s * _at(duration_scale, times, peak)
        closing = max(duration * _BLINK_CLOSE_SHARE / 2.0, 1e-3)
        opening = max(duration * (1.0 - _BLINK_CLOSE_SHARE) / 2.0, 1e-3)
        offset = times - peak
        width = np.where(offset < 0, closing, opening)
        envelope = np.maximum(envelope, np.exp(-0.5 * (offset / width) ** 2))
    return envelope


def gaze_path(times: np.ndarray, rng: np.random.Generator, config: AnimationConfig,
              amplitude_scale: np.ndarray | None = None, hold_scale: np.ndarray | None = None) -> np.ndarray:
    """(T, 2) gaze (horizontal: + to the subject's left, vertical: + up), held between quick saccades.

    amplitude_scale and hold_scale (per frame) scale each saccade's target and the time it is held.
    """
    n = times.size
    gaze = np.zeros((n, 2))
    if n == 0:
        return gaze
    lo, hi = config.gaze_interval_s
    t = rng.uniform(0.0, hi)
    # (saccade start time, gaze held afterwards); the clip starts looking straight ahead.
    events: list[tuple[float, np.ndarray]] = [(-np.inf, np.zeros(2))]
    while t < times[-1] + 1e-9:
        if rng.random() < _GAZE_CENTRE_CHANCE:
            target = rng.normal(0.0, 0.1, 2) * config.gaze_amplitude
        else:
            target = np.array([rng.normal(0.0, 1.0), rng.normal(0.0, 0.5)]) * config.gaze_amplitude
        amplitude = config.gaze_amplitude * _at(amplitude_scale, times, t)
        target = np.clip(target * _at(amplitude_scale, times, t), -2.0 * amplitude, 2.0 * amplitude)
        events.append((t, target))
        t += rng.uniform(lo, hi) * _at(hold_scale, times, t)
    saccade = max(config.saccade_s, 1e-3)
    for index in range(1, len(events)):
        start, target = events[index]
        current = events[index - 1][1]
        progress = np.clip((times - start) / saccade, 0.0, 1.0)
        # Smoothstep: a saccade accelerates and brakes within saccade_s.
        ease = progress * progress * (3.0 - 2.0 * progress)
        moving = times >= start
        gaze[moving] = current + (target - current) * ease[moving, None]
    return gaze


def _gaze_weights(gaze: np.ndarray, weights: np.ndarray) -> None:
    """Write eyeLook* weights for a (T, 2) gaze into weights (T, 52) in place."""
    horizontal, vertical = gaze[:, 0], gaze[:, 1]
    left_side = np.clip(horizontal, 0.0, 1.0)
    right_side = np.clip(-horizontal, 0.0, 1.0)
    # Looking to the subject's left: the left eye turns out, the right eye turns in (towards the nose).
    weights[:, INDEX["eyeLookOutLeft"]] = left_side
    weights[:, INDEX["eyeLookInRight"]] = left_side
    weights[:, INDEX["eyeLookInLeft"]] = right_side
    weights[:, INDEX["eyeLookOutRight"]] = right_side
    for side in ("Left", "Right"):
        weights[:, INDEX[f"eyeLookUp{side}"]] = np.clip(vertical, 0.0, 1.0)
        weights[:, INDEX[f"eyeLookDown{side}"]] = np.clip(-vertical, 0.0, 1.0)


def head_sway(times: np.ndarray, rng: np.random.Generator, config: AnimationConfig) -> np.ndarray:
    """(T, 6) slow head motion: a sum of a few seeded low-frequency sinusoids per axis, peak-limited."""
    pose = np.zeros((times.size, 6))
    amplitude_rad = np.deg2rad(config.head_sway_deg)
    for axis in range(6):
        signal = np.zeros(times.size)
        weights = rng.uniform(0.5, 1.0, _SWAY_COMPONENTS)
        weights /= weights.sum()
        for weight in weights:
            frequency = rng.uniform(*_SWAY_FREQ_HZ)
            phase = rng.uniform(0.0, 2.0 * np.pi)
            signal += weight * np.sin(2.0 * np.pi * frequency * times + phase)
        # Roll moves less than pitch and yaw in natural idling.
        scale = (amplitude_rad, amplitude_rad, 0.5 * amplitude_rad)[axis] if axis < 3 else config.head_translation
        pose[:, axis] = scale * signal
    return pose


def idle_motion(n_frames: int, fps: float, seed: int, config: AnimationConfig,
                speech_energy: np.ndarray | None = None,
                mood: IdleMood | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Idle animation: (weights (T, 52) float32 in [0, 1], head_pose (T, 6) float32).

    weights carry blinks, gaze and (with speech_energy) brow accents; mouth channels stay 0.
    head_pose is (pitch, yaw, roll) radians then (tx, ty, tz) world units; with speech_energy (T,) in [0, 1]
    the head also nods a little on emphasis. mood (per frame) changes the blink rate and length, the sway and
    the gaze; the random draws stay the same, so one seed gives the same blinks and saccades, retimed.
    """
    from scipy.ndimage import gaussian_filter1d

    n_frames = max(1, int(n_frames))
    rng = np.random.default_rng(seed)
    times = frame_times(n_frames, fps)
    duration = n_frames / fps
    weights = np.zeros((n_frames, len(ARKIT_NAMES)), np.float64)
    if mood is not None:
        for name, series in vars(mood).items():
            if np.shape(series) != (n_frames,):
                raise ValueError(f"mood.{name} has shape {np.shape(series)}, expected ({n_frames},)")

    peaks = blink_times(duration, rng, config, None if mood is None else mood.blink_interval, times)
    blink = blink_envelope(times, peaks, config, fps, None if mood is None else mood.blink_duration)
    left, right = blink.copy(), blink.copy()
    for peak in np.flatnonzero((blink > 0.999)):
        if rng.random() < _BLINK_ASYMMETRY_CHANCE:
            near = np.abs(times - times[peak]) <= config.blink_duration_s
            (left if rng.random() < 0.5 else right)[near] *= 1.0 - _BLINK_ASYMMETRY
    weights[:, INDEX["eyeBlinkLeft"]] = left
    weights[:, INDEX["eyeBlinkRight"]] = right

    if mood is None:
        gaze = gaze_path(times, rng, config)
    else:
        gaze = gaze_path(times, rng, config, mood.gaze_amplitude, mood.gaze_hold)
        gaze[:, 1] += mood.gaze_vertical
    _gaze_weights(gaze, weights)
    head_pose = head_sway(times, rng, config)
    if mood is not None:
        head_pose *= mood.sway[:, None]

    if speech_energy is not None:
        energy = np.clip(np.asarray(speech_energy, dtype=np.float64).reshape(-1), 0.0, 1.0)
        if energy.size != n_frames:
            raise ValueError(f"speech_energy has {energy.size} frames, expected {n_frames}")
        # Emphasis: energy above its slowly varying mean, smoothed to syllable scale.
        slow = gaussian_filter1d(energy, sigma=max(1.0, 0.5 * fps), mode="nearest")
        emphasis = np.clip(gaussian_filter1d(energy, sigma=max(0.5, 0.08 * fps), mode="nearest") - slow, 0.0, None)
        peak = emphasis.max()
        if peak > 0:
            emphasis /= peak
        head_pose[:, 0] += np.deg2rad(config.speech_nod_deg) * emphasis
        weights[:, INDEX["browInnerUp"]] = config.brow_accent * emphasis
        weights[:, INDEX["browOuterUpLeft"]] = 0.7 * config.brow_accent * emphasis
        weights[:, INDEX["browOuterUpRight"]] = 0.7 * config.brow_accent * emphasis

    return np.clip(weights, 0.0, 1.0).astype(np.float32), head_pose.astype(np.float32)
