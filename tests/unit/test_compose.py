"""Combined animation: frame count, layering of speech over idle motion, output types."""

import numpy as np

from tasks.animate.compose import animate_from_audio, animate_from_phonemes, animate_idle, frame_count
from tasks.animate.config import AnimationConfig
from tasks.animate.visemes import MOUTH_INDICES, mouth_open_series
from tasks.common.arkit import INDEX

CONFIG = AnimationConfig()


def test_frame_count_rule():
    assert frame_count(0.0, 25) == 1
    assert frame_count(2.0, 25) == 50
    assert frame_count(2.019, 25) == 50
    assert frame_count(2.021, 25) == 51
    assert frame_count(1.0, 29.97) == 30


def test_phoneme_animation_has_speech_mouth_and_idle_eyes():
    phonemes = [("_", 0.0, 1.0), ("h", 1.0, 1.1), ("a", 1.1, 1.5), ("l", 1.5, 1.6), ("oU", 1.6, 2.0),
                ("_", 2.0, 8.0)]
    weights, pose = animate_from_phonemes(phonemes, 8.0, CONFIG, seed=11)
    assert weights.shape == (200, 52) and pose.shape == (200, 6)
    assert weights.dtype == np.float32 and pose.dtype == np.float32
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    opening = mouth_open_series(weights)
    assert opening[:20].max() == 0.0 and opening[60:].max() == 0.0
    assert opening[28:48].max() > 0.4
    assert weights[:, INDEX["eyeBlinkLeft"]].max() > 0.85  # 8 s without a blink would be unnatural


def test_audio_animation_length_follows_the_clip():
    rate = 16000
    t = np.arange(int(1.3 * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * 450 * t)
    audio = np.concatenate([np.zeros(rate // 2), tone]).astype(np.float32)
    weights, pose = animate_from_audio(audio, rate, CONFIG, seed=2)
    assert weights.shape == (frame_count(1.8, 25), 52)
    assert weights[:10, INDEX["jawOpen"]].max() == 0.0
    assert weights[20:40, INDEX["jawOpen"]].min() > 0.2


def test_idle_animation_keeps_mouth_closed():
    weights, pose = animate_idle(4.0, CONFIG, seed=0)
    assert weights.shape == (100, 52)
    assert np.all(weights[:, MOUTH_INDICES] == 0.0)
    assert np.abs(pose).max() > 0.0
