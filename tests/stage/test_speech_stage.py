"""Text-to-speech through libespeak-ng: audio, phoneme timings, language checks, and lip sync on the result."""

from dataclasses import replace

import numpy as np
import pytest

from tasks.animate.compose import frame_count
from tasks.animate.config import AnimationConfig
from tasks.animate.visemes import mouth_open_series, weights_from_phonemes
from tasks.common.errors import AvatarInputError
from tasks.ingest.config import IngestConfig
from tasks.ingest.speech import available_languages, synthesize, validate_language

CONFIG = IngestConfig()
RATE = CONFIG.sample_rate


def rms(segment: np.ndarray) -> float:
    return float(np.sqrt(np.mean(segment.astype(np.float64) ** 2))) if segment.size else 0.0


def check_timings(result):
    duration = result.audio.size / result.sample_rate
    starts = np.array([start for _, start, _ in result.phonemes])
    ends = np.array([end for _, _, end in result.phonemes])
    assert np.all(ends > starts)
    assert np.all(np.diff(starts) > 0)
    assert np.all(starts[1:] >= ends[:-1] - 1e-9)
    assert starts[0] >= CONFIG.speech_padding_seconds - 1e-6
    assert ends[-1] <= duration + 1e-6


@pytest.mark.parametrize("language, text", [
    ("en", "Hello world. My name is Mary, and I like apples."),
    ("fr", "Bonjour tout le monde. Je suis très heureux de vous voir."),
])
def test_synthesis_gives_audible_16k_speech_with_sane_phonemes(language, text):
    result = synthesize(text, language, CONFIG)
    assert result.sample_rate == RATE and result.audio.dtype == np.float32 and result.audio.ndim == 1
    duration = result.audio.size / RATE
    assert 1.5 < duration < 10.0
    assert rms(result.audio) > 0.01
    check_timings(result)
    spoken = [p for p in result.phonemes if not p[0].startswith("_")]
    assert len(spoken) > 15
    # The padding is silent and the speech is not.
    pad = int(CONFIG.speech_padding_seconds * RATE)
    assert rms(result.audio[:pad]) == 0.0 and rms(result.audio[-pad:]) == 0.0
    first, last = spoken[0][1], spoken[-1][2]
    assert rms(result.audio[int(first * RATE):int(last * RATE)]) > 0.02


def test_sentence_pause_is_silent_in_the_audio():
    result = synthesize("Good morning. How are you today?", "en", CONFIG)
    pauses = [(s, a, b) for s, a, b in result.phonemes if s.startswith("_") and b - a > 0.15]
    assert pauses, result.phonemes
    _, start, end = pauses[0]
    speech = [p for p in result.phonemes if not p[0].startswith("_")]
    loud = rms(result.audio[int(speech[0][1] * RATE):int(start * RATE)])
    # Skip the decay of the previous phoneme; the pause proper is much quieter than the speech.
    quiet = rms(result.audio[int((start + 0.05) * RATE):int(end * RATE)])
    assert quiet < 0.1 * loud


def test_languages_are_listed_and_checked():
    languages = available_languages()
    assert {"en", "en-us", "fr", "de", "ru"} <= languages
    assert validate_language("EN_us") == "en-us"
    with pytest.raises(AvatarInputError, match="unknown language or voice 'xx-nope'"):
        validate_language("xx-nope")
    with pytest.raises(AvatarInputError, match="unknown language or voice 'xx-nope'"):
        synthesize("Hello", "xx-nope", CONFIG)


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_rejected(text):
    with pytest.raises(AvatarInputError, match="text is empty"):
        synthesize(text, "en", CONFIG)


def test_overlong_text_is_rejected():
    limited = replace(CONFIG, max_audio_seconds=3.0)
    # Few enough words to pass the quick word-count estimate, so the synthesizer itself must stop.
    with pytest.raises(AvatarInputError, match="text is too long"):
        synthesize("one two three four five six seven eight nine ten eleven twelve", "en", limited)
    # Far too many words are refused before synthesis.
    with pytest.raises(AvatarInputError, match="text is too long"):
        synthesize("word " * 400, "en", limited)


def test_rate_changes_duration():
    text = "The quick brown fox jumps over the lazy dog."
    slow = synthesize(text, "en", replace(CONFIG, tts_rate_wpm=120))
    fast = synthesize(text, "en", replace(CONFIG, tts_rate_wpm=240))
    assert slow.audio.size > 1.4 * fast.audio.size


def test_lip_sync_on_synthesized_speech_opens_during_speech_only():
    result = synthesize("Hello, how are you? I am fine.", "en", CONFIG)
    config = AnimationConfig()
    n_frames = frame_count(result.audio.size / RATE, config.fps)
    weights = weights_from_phonemes(result.phonemes, n_frames, config.fps, config)
    opening = mouth_open_series(weights)
    spoken = [p for p in result.phonemes if not p[0].startswith("_")]
    first, last = spoken[0][1], spoken[-1][2]
    # Reach of the smoothing kernel plus anticipation: beyond it the mouth must be exactly shut.
    reach = 3 * config.coarticulation_sigma_s + config.anticipation_s + 1 / config.fps
    before = int(np.floor((first - reach) * config.fps))
    after = int(np.ceil((last + reach) * config.fps))
    assert before >= 1 and after < n_frames
    assert np.all(weights[:before] == 0.0)
    assert np.all(weights[after:] == 0.0)
    during = opening[int(first * config.fps):int(last * config.fps)]
    assert during.max() > 0.4
    assert np.mean(during > 0.1) > 0.5
