"""Audio-driven mouth weights on synthetic signals: silence, vowels, fricatives, rounding and closures."""

import numpy as np

from tasks.animate.audio_features import analyse, frame_loudness, voice_activity, weights_from_audio
from tasks.animate.config import AnimationConfig
from tasks.animate.visemes import MOUTH_INDICES, mouth_open_series
from tasks.common.arkit import INDEX

RATE = 16000
FPS = 25.0
CONFIG = AnimationConfig()


def harmonic_tone(seconds: float, f0: float = 140.0, formant: float = 700.0, level: float = 0.3) -> np.ndarray:
    """Vowel-like tone: harmonics of f0 shaped by one resonance at `formant` Hz."""
    t = np.arange(int(seconds * RATE)) / RATE
    signal = np.zeros_like(t)
    for k in range(1, int(5000 / f0)):
        frequency = k * f0
        gain = 1.0 / (1.0 + ((frequency - formant) / 250.0) ** 2)
        signal += gain * np.sin(2 * np.pi * frequency * t + 0.3 * k)
    return (level * signal / np.abs(signal).max()).astype(np.float32)


def frame(seconds: float) -> int:
    return int(round(seconds * FPS))


def test_silence_then_vowel_opens_only_in_the_second_half():
    audio = np.concatenate([np.zeros(RATE, np.float32), harmonic_tone(1.0)])
    weights = weights_from_audio(audio, RATE, 50, FPS, CONFIG)
    jaw = weights[:, INDEX["jawOpen"]]
    assert weights.shape == (50, 52) and weights.dtype == np.float32
    assert np.all(weights[: frame(0.85)] == 0.0)
    assert jaw[frame(1.2):frame(1.9)].min() > 0.3
    activity = voice_activity(audio, RATE, 50, FPS, CONFIG)
    assert not activity[: frame(0.9)].any() and activity[frame(1.1):].all()


def test_silent_and_near_silent_clips_give_closed_mouth():
    assert np.all(weights_from_audio(np.zeros(RATE), RATE, 25, FPS, CONFIG) == 0.0)
    hiss = (np.random.default_rng(0).standard_normal(RATE) * 10 ** (-70 / 20)).astype(np.float32)
    assert np.all(weights_from_audio(hiss, RATE, 25, FPS, CONFIG) == 0.0)
    assert not voice_activity(hiss, RATE, 25, FPS, CONFIG).any()


def test_fricative_noise_keeps_jaw_low_and_rolls_lower_lip():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(RATE // 2)
    # High-passed noise, like /s/ or /f/.
    hiss = np.diff(np.diff(noise, prepend=0), prepend=0)
    hiss = (0.3 * hiss / np.sqrt(np.mean(hiss ** 2)) * np.sqrt(np.mean(harmonic_tone(0.1) ** 2)) / 0.3)
    audio = np.concatenate([harmonic_tone(0.5), hiss.astype(np.float32), harmonic_tone(0.5)])
    weights = weights_from_audio(audio, RATE, frame(1.5), FPS, CONFIG)
    vowel = weights[frame(0.2):frame(0.4)].mean(axis=0)
    fricative = weights[frame(0.65):frame(0.85)].mean(axis=0)
    assert fricative[INDEX["jawOpen"]] < 0.5 * vowel[INDEX["jawOpen"]]
    assert fricative[INDEX["mouthRollLower"]] > 0.1 > vowel[INDEX["mouthRollLower"]]


def test_low_centroid_rounds_and_high_centroid_spreads():
    audio = np.concatenate([harmonic_tone(0.6, formant=2200.0), harmonic_tone(0.6, formant=350.0),
                            harmonic_tone(0.6, formant=2200.0), harmonic_tone(0.6, formant=350.0)])
    weights = weights_from_audio(audio, RATE, frame(2.4), FPS, CONFIG)
    spread_part = weights[frame(0.15):frame(0.45)].mean(axis=0)
    round_part = weights[frame(0.75):frame(1.05)].mean(axis=0)
    assert round_part[INDEX["mouthPucker"]] > spread_part[INDEX["mouthPucker"]] + 0.1
    assert spread_part[INDEX["mouthStretchLeft"]] > round_part[INDEX["mouthStretchLeft"]] + 0.05


def test_energy_dip_between_syllables_closes_the_lips():
    gap = np.zeros(int(0.07 * RATE), np.float32) + 1e-3 * harmonic_tone(0.07)
    audio = np.concatenate([np.zeros(RATE // 4, np.float32), harmonic_tone(0.4), gap, harmonic_tone(0.4),
                            np.zeros(RATE // 4, np.float32)])
    n_frames = frame(audio.size / RATE)
    weights = weights_from_audio(audio, RATE, n_frames, FPS, CONFIG)
    opening = mouth_open_series(weights)
    dip = frame(0.25 + 0.4 + 0.035)
    assert opening[dip - 2:dip + 2].min() < 0.05
    assert opening[frame(0.45)] > 0.3 and opening[frame(0.9)] > 0.3
    # The gap is too short to count as a pause, so voice activity stays on across it.
    assert voice_activity(audio, RATE, n_frames, FPS, CONFIG)[dip]


def test_speech_energy_range_and_non_mouth_channels_untouched():
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), harmonic_tone(0.5)])
    energy = frame_loudness(analyse(audio, RATE, CONFIG), 25, FPS)
    assert energy.shape == (25,)
    assert energy[:10].max() == 0.0 and energy[15:23].min() > 0.8
    weights = weights_from_audio(audio, RATE, 25, FPS, CONFIG)
    assert np.all(weights[:, np.setdiff1d(np.arange(52), MOUTH_INDICES)] == 0.0)
