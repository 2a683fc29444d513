"""Settings of the ingest stage: limits on input media and text-to-speech parameters."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tasks.common.environment import number_from_environment

MAX_AUDIO_VARIABLE = "AVATARFLOW_MAX_AUDIO_SECONDS"
"""Environment variable: the default audio length limit, in seconds (also the driving-video limit)."""

DEFAULT_MAX_AUDIO_SECONDS = 900.0


def _default_max_audio_seconds() -> float:
    seconds = number_from_environment(MAX_AUDIO_VARIABLE, float, DEFAULT_MAX_AUDIO_SECONDS, "a number of seconds")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{MAX_AUDIO_VARIABLE} must be a positive number of seconds, "
                         f"got {os.environ[MAX_AUDIO_VARIABLE].strip()!r}")
    return seconds


@dataclass(frozen=True)
class AlignmentConfig:
    """How recorded English speech gets phoneme timings (pocketsphinx forced alignment)."""

    languages: tuple[str, ...] = ("en",)
    """Base language codes aligned with pocketsphinx's en-us model (en, en-us, en-gb ... all match "en");
    other languages use the audio-feature visemes."""

    recognise_untranscribed: bool = True
    """English audio without a transcript is first recognised by pocketsphinx, then aligned; off, such
    rows use the audio-feature visemes."""

    pronunciation_voice: str = "en-us"
    """espeak-ng voice that spells words missing from the aligner's dictionary."""

    beam: float = 1e-80
    """Search beam of the aligner (pocketsphinx beam, word beam and phone beam); wide, because the words are
    known and speech far from the acoustic model (synthetic or accented voices) otherwise finds no path."""

    retry_beam: float = 1e-120
    """The beam of a second try when the first finds no path: some voices need it, and every alignment at it
    would cost more search for the many that do not."""

    max_words_per_second: float = 8.0
    """A transcript with more words than this rate allows for the audio's length is rejected as not
    matching it."""

    window_seconds: float = 30.0
    """Recordings longer than this (plus window_margin_seconds) are recognised and aligned window by
    window, each at most about this long (seconds) and cut at a quiet moment: one alignment's time and
    memory grow with the square of its length, windows keep them linear."""

    window_margin_seconds: float = 5.0
    """A recording at most this much longer than window_seconds is still aligned whole."""


@dataclass(frozen=True)
class IngestConfig:
    """Limits and defaults used when decoding a row's portrait, audio and text."""

    sample_rate: int = 16000
    """Sample rate (Hz) every decoded or synthesized audio clip is resampled to, mono float32."""

    max_image_pixels: int = 40_000_000
    """Largest accepted image (width × height), checked from the header before any pixel is decoded."""

    max_file_bytes: int = 200 * 1024 * 1024
    """Largest accepted input file on disk, in bytes (images and audio alike)."""

    max_audio_seconds: float = field(default_factory=_default_max_audio_seconds)
    """Longest accepted audio, uploaded or synthesized, and longest driving video, in seconds
    (default 900, or AVATARFLOW_MAX_AUDIO_SECONDS)."""

    min_audio_seconds: float = 0.3
    """Shortest accepted audio in seconds; shorter clips cannot carry a spoken word."""

    silence_rms_dbfs: float = -45.0
    """Audio whose loudest 100 ms window has an RMS below this level (dB full scale) is rejected as silent."""

    clipping_warn_fraction: float = 0.001
    """Fraction of samples at full scale above which a clipping warning is reported (the audio is still accepted)."""

    default_language: str = "en"
    """espeak-ng language or voice used for text rows that name no language."""

    tts_rate_wpm: int = 160
    """Speaking rate of espeak-ng in words per minute."""

    speech_padding_seconds: float = 0.25
    """Silence added before and after synthesized speech so the avatar starts and ends with a closed mouth."""

    allowed_roots: tuple[str, ...] = ()
    """Extra directories input files may live in, besides the manifest's own directory."""

    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    """Forced alignment (and recognition) of recorded English speech."""

    def __post_init__(self) -> None:
        if not self.max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be > 0, got {self.max_audio_seconds}")
