"""The audio length limit is a setting: 15 minutes by default, AVATARFLOW_MAX_AUDIO_SECONDS, or the
config field; clips over the old 120 s limit pass ingest, clips over the limit are refused in one line."""

import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tasks.common.errors import AvatarInputError
from tasks.ingest.config import MAX_AUDIO_VARIABLE, IngestConfig
from tasks.ingest.media import load_audio
from tasks.ingest.speech import synthesize

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples"
SPEECH = SAMPLES / "audio" / "en_em_echomimic_en.wav"


def write_pcm(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def test_default_is_fifteen_minutes(monkeypatch):
    monkeypatch.delenv(MAX_AUDIO_VARIABLE, raising=False)
    assert IngestConfig().max_audio_seconds == 900.0


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv(MAX_AUDIO_VARIABLE, " 600 ")
    assert IngestConfig().max_audio_seconds == 600.0
    # An explicit value still wins over the environment.
    assert IngestConfig(max_audio_seconds=30.0).max_audio_seconds == 30.0


@pytest.mark.parametrize("value", ["ten minutes", "0", "-5", "nan", "inf"])
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(MAX_AUDIO_VARIABLE, value)
    with pytest.raises(ValueError) as error:
        IngestConfig()
    message = str(error.value)
    assert MAX_AUDIO_VARIABLE in message and repr(value) in message and "\n" not in message


def test_speech_over_two_minutes_is_accepted_and_over_the_limit_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_AUDIO_VARIABLE, raising=False)
    config = IngestConfig()
    clip = load_audio(SPEECH, config)
    # 130 s of quiet-ish speech: the sample clip at a quarter of its level, with pauses, end to end.
    pause = np.zeros(config.sample_rate // 2, np.float32)
    repeats = int(np.ceil(130 * config.sample_rate / (clip.size + pause.size)))
    long_speech = np.tile(np.concatenate([0.25 * clip, pause]), repeats)[: 130 * config.sample_rate]
    path = write_pcm(tmp_path / "speech_130s.wav", long_speech, config.sample_rate)
    audio = load_audio(path, config)
    assert abs(audio.size / config.sample_rate - 130.0) < 0.05

    with pytest.raises(AvatarInputError) as error:
        load_audio(path, replace(config, max_audio_seconds=120.0))
    assert str(error.value) == "speech_130s.wav: audio is too long (130.0 s > 120 s)"


def test_sixteen_minutes_is_refused_from_the_header(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_AUDIO_VARIABLE, raising=False)
    rate = 8000
    tone = 0.2 * np.sin(2 * np.pi * 200 * np.arange(16 * 60 * rate) / rate)
    path = write_pcm(tmp_path / "sixteen.wav", tone, rate)
    with pytest.raises(AvatarInputError) as error:
        load_audio(path, IngestConfig())
    assert str(error.value) == "sixteen.wav: audio is too long (960.0 s > 900 s)"


def test_text_speech_over_two_minutes_is_accepted(monkeypatch):
    monkeypatch.delenv(MAX_AUDIO_VARIABLE, raising=False)
    sentence = "The quick brown fox jumps over the lazy dog while the band plays on. "
    speech = synthesize(sentence * 32, "en", IngestConfig())
    assert speech.duration_seconds > 125.0
    with pytest.raises(AvatarInputError, match="text is too long") as error:
        synthesize(sentence * 32, "en", IngestConfig(max_audio_seconds=120.0))
    assert "\n" not in str(error.value)
