"""Whole-clip animation: speech-driven mouth weights merged with idle blinks, gaze, brows and head motion,
with the row's emotion layered on top.

Mouth and jaw channels come from speech; every other channel comes from the idle layer; the emotion then
joins them under the ownership rules of tasks/animate/emotion.py and retimes the idle rhythms. The result is
the animation arrays of the common convention: weights (T, 52) float32 in [0, 1] and head_pose (T, 6) float32.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tasks.animate.audio_features import (AudioFeatures, analyse, bridge_voiced_pauses, frame_loudness,
                                          mouth_from_features, opening_gain, unaligned_voice)
from tasks.animate.config import AnimationConfig
from tasks.animate.emotion import EmotionTimeline, apply_emotion, idle_mood
from tasks.animate.idle import IdleMood, idle_motion
from tasks.animate.visemes import MOUTH_INDICES, mouth_open_series, weights_from_phonemes
from tasks.common.arkit import INDEX

__all__ = ["frame_count", "phoneme_mouth", "animate_from_phonemes", "animate_from_audio", "animate_idle",
           "merge_layers", "mouth_open_series"]


def frame_count(duration_seconds: float, fps: float) -> int:
    """T = max(1, round(duration_seconds * fps))."""
    return max(1, int(round(float(duration_seconds) * fps)))


def merge_layers(speech_weights: np.ndarray, idle_weights: np.ndarray) -> np.ndarray:
    """Mouth/jaw channels from speech, the rest from idle (speech wins where both set a non-mouth channel)."""
    merged = np.maximum(np.asarray(idle_weights, np.float64), np.asarray(speech_weights, np.float64))
    merged[:, MOUTH_INDICES] = np.asarray(speech_weights, np.float64)[:, MOUTH_INDICES]
    return np.clip(merged, 0.0, 1.0).astype(np.float32)


# Lip presses seal a closure; they stay whole however quiet the closure is.
_LOUDNESS_SCALED = np.array([i for i in MOUTH_INDICES if i not in (INDEX["mouthPressLeft"], INDEX["mouthPressRight"])])


def follow_loudness(speech_weights: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Scale the speech layer's mouth channels by a per-frame gain (T,). jawOpen and mouthClose scale together,
    so a sealed frame stays sealed."""
    out = np.asarray(speech_weights, np.float64).copy()
    out[:, _LOUDNESS_SCALED] *= np.asarray(gain, np.float64)[:, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def phoneme_mouth(phonemes: Sequence[tuple[str, float, float]], n_frames: int, config: AnimationConfig,
                  features: AudioFeatures | None = None) -> np.ndarray:
    """(T, 52) mouth weights for timed phonemes. Given their audio's features (audio_features.analyse), they open
    as wide as its loudness says, a short pause set in speech is bridged, and voice that no phoneme covers is
    mouthed from the audio alone."""
    if features is not None:
        phonemes = bridge_voiced_pauses(phonemes, features)
    speech = weights_from_phonemes(phonemes, n_frames, config.fps, config)
    if features is None:
        return speech
    speech = follow_loudness(speech, opening_gain(features, n_frames, config.fps, config))
    missed = unaligned_voice(features, phonemes, n_frames, config.fps)
    if not missed.any():
        return speech
    from_audio = mouth_from_features(features, n_frames, config.fps, config)
    blended = speech * (1.0 - missed[:, None]) + from_audio * missed[:, None]
    return np.clip(blended, 0.0, 1.0).astype(np.float32)


def _mood(emotion: EmotionTimeline | None, n_frames: int, config: AnimationConfig) -> IdleMood | None:
    return None if emotion is None or emotion.is_neutral else idle_mood(emotion, n_frames, config.fps, config.emotion)


def _with_emotion(weights: np.ndarray, head_pose: np.ndarray, emotion: EmotionTimeline | None,
                  config: AnimationConfig) -> tuple[np.ndarray, np.ndarray]:
    if emotion is None:
        return weights, head_pose
    return apply_emotion(weights, head_pose, emotion, config.fps, config.emotion)


def animate_from_phonemes(phonemes: Sequence[tuple[str, float, float]], duration_seconds: float,
                          config: AnimationConfig, seed: int, audio: np.ndarray | None = None,
                          sample_rate: int = 16000,
                          emotion: EmotionTimeline | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Animation for timed espeak-ng phonemes (symbol, start_s, end_s) over a clip of duration_seconds.

    When the spoken audio is given, its loudness sets how wide the phonemes open the mouth (see
    audio_features.opening_gain) and drives nods and brow accents; otherwise the phoneme-driven mouth opening
    drives them. An emotion timeline (None: neutral) is layered over the result.
    """
    n_frames = frame_count(duration_seconds, config.fps)
    features = None if audio is None else analyse(audio, sample_rate, config)
    speech = phoneme_mouth(phonemes, n_frames, config, features)
    if features is not None:
        energy = frame_loudness(features, n_frames, config.fps)
    else:
        opening = mouth_open_series(speech)
        energy = opening / opening.max() if opening.max() > 0 else opening
    idle_weights, head_pose = idle_motion(n_frames, config.fps, seed, config, speech_energy=energy,
                                          mood=_mood(emotion, n_frames, config))
    return _with_emotion(merge_layers(speech, idle_weights), head_pose, emotion, config)


def animate_from_audio(audio: np.ndarray, sample_rate: int, config: AnimationConfig, seed: int,
                       emotion: EmotionTimeline | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Animation for a speech recording in any language: mouth from the audio signal, plus idle motion and
    the emotion timeline (None: neutral)."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_frames = frame_count(samples.size / sample_rate, config.fps)
    features = analyse(samples, sample_rate, config)
    speech = mouth_from_features(features, n_frames, config.fps, config)
    energy = frame_loudness(features, n_frames, config.fps)
    idle_weights, head_pose = idle_motion(n_frames, config.fps, seed, config, speech_energy=energy,
                                          mood=_mood(emotion, n_frames, config))
    return _with_emotion(merge_layers(speech, idle_weights), head_pose, emotion, config)


def animate_idle(duration_seconds: float, config: AnimationConfig, seed: int,
                 emotion: EmotionTimeline | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Animation with no speech: closed mouth, blinks, gaze and head sway, under the emotion timeline."""
    n_frames = frame_count(duration_seconds, config.fps)
    idle_weights, head_pose = idle_motion(n_frames, config.fps, seed, config, mood=_mood(emotion, n_frames, config))
    return _with_emotion(merge_layers(np.zeros_like(idle_weights), idle_weights), head_pose, emotion, config)
