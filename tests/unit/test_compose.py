"""Combined animation: frame count, layering of speech over idle motion, output types."""

import dataclasses

import numpy as np

from tasks.animate.audio_features import analyse, bridge_voiced_pauses
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


def _vowel(seconds: float, level: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * (np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 700 * t))).astype(np.float32)


def test_the_loudness_of_the_speech_opens_the_mouth_and_closures_stay_sealed():
    # The same syllables, said loudly, then 20 dB softer, then with the voice gone (the aligner's timing
    # runs on into a pause): ma-ma-ma...
    syllables = [("m", 0.4 * k, 0.4 * k + 0.1) for k in range(15)] + \
        [("a", 0.4 * k + 0.1, 0.4 * k + 0.4) for k in range(15)]
    phonemes = sorted(syllables, key=lambda p: p[1])
    audio = np.concatenate([_vowel(2.0, 0.3), _vowel(2.0, 0.03), np.zeros(2 * 16000, np.float32)])
    plain, _ = animate_from_phonemes(phonemes, 6.0, dataclasses.replace(CONFIG, loudness_range_db=0.0), seed=4,
                                     audio=audio)
    loud, _ = animate_from_phonemes(phonemes, 6.0, CONFIG, seed=4, audio=audio)
    open_plain, open_loud = mouth_open_series(plain), mouth_open_series(loud)
    vowels = [int((0.4 * k + 0.25) * 25) for k in range(15)]
    strong, soft, mute = vowels[1:4], vowels[6:9], vowels[11:14]
    # Without the loudness, the three parts open alike; with it, the soft part opens less and the mute one not.
    assert np.ptp(open_plain[strong + soft + mute]) < 0.05
    assert open_loud[strong].min() > 0.8 * open_plain[strong].min()
    assert open_loud[soft].max() < 0.5 * open_loud[strong].min()
    assert open_loud[mute].max() < 0.02
    # /m/ stays sealed wherever the vowels around it are open, and nothing but the mouth moves.
    closures = [int((0.4 * k + 0.05) * 25) for k in range(1, 5)]
    assert open_loud[closures].max() < 0.02
    non_mouth = np.setdiff1d(np.arange(52), MOUTH_INDICES)
    np.testing.assert_array_equal(loud[:, non_mouth], plain[:, non_mouth])


def test_voice_the_alignment_missed_is_mouthed_from_the_audio():
    # The recogniser found "mama" in the first 0.8 s; three more syllables follow that no phoneme covers, then a
    # pause.
    phonemes = [("m", 0.0, 0.1), ("a", 0.1, 0.4), ("m", 0.4, 0.5), ("a", 0.5, 0.8)]
    t = np.arange(int(1.2 * 16000)) / 16000
    missed = _vowel(1.2, 0.3) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t - np.pi / 2)).astype(np.float32)
    audio = np.concatenate([_vowel(0.8, 0.3), missed, np.zeros(16000, np.float32)])
    with_audio, _ = animate_from_phonemes(phonemes, 3.0, CONFIG, seed=1, audio=audio)
    timing_only, _ = animate_from_phonemes(phonemes, 3.0, CONFIG, seed=1)
    opening, still = mouth_open_series(with_audio), mouth_open_series(timing_only)
    syllables = [int((0.8 + 0.4 * k + 0.2) * 25) for k in range(3)]
    dips = [int((0.8 + 0.4 * k) * 25) for k in (1, 2)]
    assert still[syllables].max() < 0.02  # the phonemes alone leave the missed words mute
    assert opening[syllables].min() > 0.3
    assert opening[dips].max() < 0.5 * opening[syllables].min()
    assert opening[55:].max() == 0.0  # the pause after them stays shut
    assert opening[[int(0.05 * 25), int(0.45 * 25)]].max() < 0.02  # the aligned /m/ stay sealed


def test_a_short_pause_the_aligner_put_in_loud_voice_is_bridged_and_a_silent_one_kept():
    # "a a": the aligner put a 60 ms pause between the vowels. In the first clip the voice runs on through it; in
    # the second the speaker stopped.
    phonemes = [("a", 0.2, 0.6), ("_", 0.6, 0.66), ("a", 0.66, 1.0)]
    through = _vowel(1.2, 0.3)
    stopped = through.copy()
    stopped[int(0.6 * 16000):int(0.66 * 16000)] = 0.0
    features = analyse(through, 16000, CONFIG)
    assert bridge_voiced_pauses(phonemes, features) == [("a", 0.2, 0.63), ("a", 0.63, 1.0)]
    assert bridge_voiced_pauses(phonemes, analyse(stopped, 16000, CONFIG)) == phonemes
    # Pauses at the ends, and longer ones (left to unaligned_voice), are kept.
    edges = [("_", 0.0, 0.2), ("a", 0.2, 0.6), ("_", 0.6, 0.9), ("a", 0.9, 1.0), ("_", 1.0, 1.1)]
    assert bridge_voiced_pauses(edges, features) == edges
    run_on, _ = animate_from_phonemes(phonemes, 1.2, CONFIG, seed=2, audio=through)
    halted, _ = animate_from_phonemes(phonemes, 1.2, CONFIG, seed=2, audio=stopped)
    pause, vowel = int(0.63 * 25), int(0.4 * 25)
    # Run on, the mouth stays as open as in the vowels; stopped, it nearly closes.
    assert mouth_open_series(run_on)[pause] > 0.9 * mouth_open_series(run_on)[vowel]
    assert mouth_open_series(halted)[pause] < 0.5 * mouth_open_series(halted)[vowel]
