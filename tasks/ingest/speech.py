"""Text-to-speech with espeak-ng, returning the audio together with phoneme timings.

libespeak-ng is driven through its C API (ctypes) in synchronous mode with phoneme events enabled, so each
phoneme's mnemonic and its position in the generated audio come from the synthesizer itself.
The library keeps global state, so every call holds one module-level lock and it is initialised once per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass, field

import numpy as np

from tasks.common.errors import AvatarInputError
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import check_audible

# Values from espeak-ng/speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_BUFFER_MS = 200

# espeak-ng reads roughly this many words per minute at rate 1; used only to reject huge texts before synthesis.
_MAX_WORDS_MARGIN = 2.0


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds from the start of this synthesis
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """espeak_VOICE."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # sequence of (priority byte, NUL-terminated name), ended by a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class SpeechResult:
    """Synthesized speech: mono float32 audio and the phonemes spoken, in seconds from the audio's start."""

    audio: np.ndarray
    sample_rate: int
    phonemes: list[tuple[str, float, float]]
    warnings: list[str] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float:
        return self.audio.size / self.sample_rate


class _Engine:
    """The process-wide libespeak-ng instance; use only while holding _LOCK."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as error:
            raise RuntimeError(f"libespeak-ng is not installed ({error})") from error
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))

        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, None,
                                     _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate})")
        self.lib = lib
        self.native_rate = rate
        # Per-synthesis collectors, filled by the callback.
        self._samples: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._sample_limit = 0
        self._collected = 0
        self._aborted = False
        # Keep a reference: the C library calls this pointer for the life of the process.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self.voices = self._list_voices()

    def _on_synth(self, wav, count, events) -> int:
        if wav and count > 0:
            self._samples.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            self._collected += count
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_PHONEME:
                symbol = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append((symbol, event.audio_position))
            index += 1
        if self._collected > self._sample_limit:
            self._aborted = True
            return 1  # non-zero asks espeak to stop synthesis
        return 0

    def _list_voices(self) -> tuple[frozenset[str], frozenset[str]]:
        """(language codes, voice names and identifiers) known to this espeak-ng installation."""
        languages: set[str] = set()
        names: set[str] = set()
        table = self.lib.espeak_ListVoices(None)
        index = 0
        while table and table[index]:
            voice = table[index].contents
            if voice.name:
                names.add(voice.name.decode("utf-8", "replace").lower())
            if voice.identifier:
                identifier = voice.identifier.decode("utf-8", "replace").lower()
                names.add(identifier)
                names.add(identifier.rsplit("/", 1)[-1])
            if voice.languages:
                raw = ctypes.cast(voice.languages, ctypes.POINTER(ctypes.c_ubyte))
                offset = 0
                # Each entry: one priority byte, then a NUL-terminated language name; a 0 priority ends the list.
                while raw[offset] != 0:
                    offset += 1
                    start = offset
                    while raw[offset] != 0:
                        offset += 1
                    languages.add(bytes(raw[start:offset]).decode("utf-8", "replace").lower())
                    offset += 1
            index += 1
        return frozenset(languages), frozenset(names)

    def synthesize(self, text: str, voice: str, rate_wpm: int, max_seconds: float) -> tuple[np.ndarray, list, bool]:
        """Speak text with the given voice.

        Returns (int16 audio at native_rate, [(symbol, start_ms)], aborted) where aborted means synthesis was
        stopped because the audio passed max_seconds.
        """
        if self.lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
            raise AvatarInputError(f"unknown language or voice '{voice}'")
        self.lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
        self._samples, self._events = [], []
        self._collected = 0
        self._aborted = False
        self._sample_limit = int(max_seconds * self.native_rate)
        # A NUL byte would end the C string early.
        data = text.replace("\0", " ").encode("utf-8")
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        audio = np.concatenate(self._samples) if self._samples else np.zeros(0, np.int16)
        return audio, list(self._events), self._aborted


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    """The process-wide engine, created on first use; caller holds _LOCK."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def available_languages() -> frozenset[str]:
    """Language codes espeak-ng can speak here (e.g. "en", "en-us", "fr", "de", "ru"), lower case."""
    with _LOCK:
        return _engine().voices[0]


def validate_language(code: str) -> str:
    """Return the normalised language/voice code, or raise AvatarInputError when espeak-ng does not know it."""
    normalised = (code or "").strip().lower().replace("_", "-")
    if not normalised:
        raise AvatarInputError("language is empty")
    with _LOCK:
        languages, names = _engine().voices
    # A voice variant such as "en+f3" is valid when its base is.
    base = normalised.split("+", 1)[0]
    if base not in languages and base not in names:
        raise AvatarInputError(f"unknown language or voice '{code}'")
    return normalised


def _phoneme_intervals(events: list[tuple[str, int]], duration_s: float) -> list[tuple[str, float, float]]:
    """Turn (symbol, start_ms) events into (symbol, start_s, end_s); each phoneme lasts until the next one."""
    starts = [min(max(ms / 1000.0, 0.0), duration_s) for _, ms in events]
    # espeak reports positions in whole milliseconds; enforce monotonic order against rounding.
    starts = list(np.maximum.accumulate(starts)) if starts else []
    intervals = []
    for index, (symbol, _) in enumerate(events):
        start = float(starts[index])
        end = float(starts[index + 1]) if index + 1 < len(events) else duration_s
        if end > start and symbol:
            intervals.append((symbol, start, end))
    return intervals


def synthesize(text: str, language: str | None, config: IngestConfig) -> SpeechResult:
    """Speak text in the given espeak-ng language or voice and return audio at config.sample_rate with phonemes.

    Silence of config.speech_padding_seconds is added at both ends; phoneme times include that offset.
    Pauses are kept as phonemes whose symbol starts with "_" (espeak's pause mnemonics).
    """
    if text is None or not text.strip():
        raise AvatarInputError("text is empty")
    voice = validate_language(language or config.default_language)
    padding = max(0.0, config.speech_padding_seconds)
    speech_budget = config.max_audio_seconds - 2 * padding
    # A cheap early rejection of texts far beyond the limit, before running the synthesizer at all.
    words = len(text.split())
    if words / max(config.tts_rate_wpm, 1) * 60.0 > _MAX_WORDS_MARGIN * config.max_audio_seconds:
        raise AvatarInputError(
            f"text is too long: about {words} words cannot be spoken within {config.max_audio_seconds:g} s")
    with _LOCK:
        engine = _engine()
        native, events, aborted = engine.synthesize(text, voice, config.tts_rate_wpm, speech_budget)
        native_rate = engine.native_rate
    if aborted:
        raise AvatarInputError(f"text is too long: its speech would exceed {config.max_audio_seconds:g} s")

    rate = config.sample_rate
    waveform = native.astype(np.float32) / 32768.0
    if native_rate != rate:
        divisor = np.gcd(int(native_rate), int(rate))
        from scipy.signal import resample_poly  # imported on first use: the flow process never needs it

        waveform = resample_poly(waveform, rate // divisor, native_rate // divisor).astype(np.float32)
    speech_seconds = waveform.size / rate
    if speech_seconds > speech_budget:
        raise AvatarInputError(
            f"text is too long: its speech lasts {speech_seconds:.1f} s > {config.max_audio_seconds:g} s")
    pad = np.zeros(int(round(padding * rate)), np.float32)
    audio = np.concatenate([pad, waveform, pad])
    offset = pad.size / rate
    phonemes = [(symbol, start + offset, end + offset)
                for symbol, start, end in _phoneme_intervals(events, speech_seconds)]
    if not any(not symbol.startswith("_") for symbol, _, _ in phonemes):
        raise AvatarInputError("text produced no speech (nothing pronounceable)")
    check_audible(audio, config, name="synthesized speech")
    notes: list[str] = []
    if audio.size / rate < config.min_audio_seconds:
        notes.append(f"synthesized speech is very short ({audio.size / rate:.2f} s)")
    return SpeechResult(audio=audio, sample_rate=rate, phonemes=phonemes, warnings=notes)


def spoken_phonemes(text: str, voice: str, rate_wpm: int = 160) -> list[str]:
    """The espeak-ng mnemonics espeak-ng would speak for text (pauses left out), e.g. for a word no
    dictionary knows."""
    if not text or not text.strip():
        return []
    with _LOCK:
        engine = _engine()
        _, events, _ = engine.synthesize(text, voice, rate_wpm, max_seconds=60.0)
    return [symbol for symbol, _ in events if symbol and not symbol.startswith("_")]
