"""Forced alignment on a real recorded English clip with its transcript, and the audio fallback for French."""

from pathlib import Path

import numpy as np
import pytest

from tasks.animate.compose import animate_from_phonemes
from tasks.animate.config import AnimationConfig
from tasks.animate.visemes import mouth_open_series
from tasks.ingest.alignment import time_speech
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_audio
from tasks.ingest.speech import spoken_phonemes

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples"
CONFIG = IngestConfig(allowed_roots=(str(SAMPLES),))
ENGLISH = SAMPLES / "audio" / "en_em_echomimic_en.wav"
TRANSCRIPT = "Welcome to use EchoMimic. We hope that EchoMimic can bring you a unique experience."


def pronounce(word):
    return spoken_phonemes(word, CONFIG.alignment.pronunciation_voice)


def test_english_clip_with_transcript_is_aligned_and_closes_the_lips():
    if not ENGLISH.exists():
        pytest.skip("shared English sample missing")
    audio = load_audio(ENGLISH, CONFIG)
    timing = time_speech(audio, CONFIG.sample_rate, TRANSCRIPT, "en", pronounce, CONFIG.alignment)
    assert timing.method == "aligned" and timing.warnings == []
    assert timing.words[3] == "echomimic"  # not in the dictionary: spelled by espeak-ng
    duration = audio.size / CONFIG.sample_rate
    starts = np.array([start for _, start, _ in timing.phonemes])
    assert np.all(np.diff(starts) >= 0) and timing.phonemes[-1][2] <= duration + 0.02
    bilabials = [(start, end) for symbol, start, end in timing.phonemes if symbol in ("p", "b", "m")]
    # welcome, echomimic (twice, two m each), hope, bring, experience
    assert len(bilabials) == 8
    # Speech spans most of the clip: the words are spread over the recording, not crammed at one end.
    assert bilabials[0][0] < 0.4 * duration and bilabials[-1][0] > 0.7 * duration

    settings = AnimationConfig()
    # The phonemes shape the mouth, the recording's loudness opens it.
    weights, _ = animate_from_phonemes(timing.phonemes, duration, settings, seed=1, audio=audio,
                                       sample_rate=CONFIG.sample_rate)
    opening = mouth_open_series(weights)
    # Voiced frames (RMS above a quarter of the loud end) open wider than the rest: a Mann-Whitney AUC. The
    # phoneme timing alone scores 0.62 on this clip; a mouth that ignored the voice would score 0.5.
    hop = CONFIG.sample_rate / settings.fps
    rms = np.array([np.sqrt(np.mean(audio[int(i * hop):int((i + 1) * hop)] ** 2)) for i in range(opening.size)])
    voiced = rms > 0.25 * np.percentile(rms, 95)
    higher = (opening[voiced][:, None] > opening[~voiced][None, :]).mean()
    ties = (opening[voiced][:, None] == opening[~voiced][None, :]).mean()
    assert higher + 0.5 * ties > 0.75
    at_bilabials = [opening[int(0.5 * (s + e) * settings.fps)] for s, e in bilabials]
    open_vowels = [opening[int(0.5 * (s + e) * settings.fps)] for symbol, s, e in timing.phonemes
                   if symbol in ("A:", "a", "V", "aI", "aU", "O:")]
    assert np.median(at_bilabials) < 0.25 * np.median(open_vowels), (at_bilabials, open_vowels)


def test_french_clip_with_transcript_uses_the_audio_features():
    french = SAMPLES / "audio" / "fr_st_fayu.wav"
    if not french.exists():
        pytest.skip("shared French sample missing")
    audio = load_audio(french, CONFIG)
    timing = time_speech(audio, CONFIG.sample_rate, "Bonjour à tous.", "fr", pronounce, CONFIG.alignment)
    assert timing.method == "audio" and timing.phonemes == [] and "English only" in timing.warnings[0]
