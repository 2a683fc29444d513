"""Forced alignment of English speech with pocketsphinx: audio + words in, timed phones out.

pocketsphinx's en-us acoustic model, its CMU pronouncing dictionary and its language model ship inside
the wheel. A transcript is normalised to dictionary words; a word the dictionary lacks is spelled in
ARPAbet from espeak-ng's own pronunciation. Without a transcript the words are first recognised with the
language model, then aligned. Phones come back both in ARPAbet (the aligner's set) and as espeak-ng
mnemonics, so the viseme code drives aligned speech exactly as it drives text-to-speech.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tasks.ingest.config import AlignmentConfig

# pocketsphinx works in 10 ms frames on 16 kHz, 16-bit audio.
ALIGN_SAMPLE_RATE = 16000
_FRAME_S = 0.01

# ARPAbet (stress digits dropped) -> espeak-ng mnemonic with the same mouth shape.
ARPABET_TO_ESPEAK: dict[str, str] = {
    "AA": "A:", "AE": "a", "AH": "V", "AO": "O:", "AW": "aU", "AY": "aI", "B": "b", "CH": "tS", "D": "d",
    "DH": "D", "EH": "E", "ER": "3:", "EY": "eI", "F": "f", "G": "g", "HH": "h", "IH": "I", "IY": "i:",
    "JH": "dZ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "N", "OW": "oU", "OY": "OI", "P": "p", "R": "r",
    "S": "s", "SH": "S", "T": "t", "TH": "T", "UH": "U", "UW": "u:", "V": "v", "W": "w", "Y": "j", "Z": "z",
    "ZH": "Z", "SIL": "_",
}

# espeak-ng English mnemonics (modifiers and variant marks stripped) -> ARPAbet phones.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "g": ("G",), "f": ("F",), "v": ("V",),
    "T": ("TH",), "D": ("DH",), "s": ("S",), "z": ("Z",), "S": ("SH",), "Z": ("ZH",), "h": ("HH",),
    "tS": ("CH",), "dZ": ("JH",), "m": ("M",), "n": ("N",), "N": ("NG",), "l": ("L",), "r": ("R",),
    "j": ("Y",), "w": ("W",), "x": ("K",), "?": ("T",),
    "a": ("AE",), "aa": ("AE",), "A:": ("AA",), "A": ("AA",), "0": ("AA",), "A@": ("AA", "R"), "O:": ("AO",),
    "O": ("AO",), "O@": ("AO", "R"), "o@": ("AO", "R"), "V": ("AH",), "@": ("AH",), "3": ("ER",),
    "3:": ("ER",), "@L": ("AH", "L"), "I": ("IH",), "i": ("IY",), "i:": ("IY",), "E": ("EH",),
    "e@": ("EH", "R"), "eI": ("EY",), "aI": ("AY",), "aU": ("AW",), "OI": ("OY",), "oU": ("OW",),
    "@U": ("OW",), "o": ("OW",), "u:": ("UW",), "U": ("UH",), "U@": ("UH", "R"), "I@": ("IH", "R"),
    "i@": ("IH", "R"), "aI@": ("AY", "ER"), "aU@": ("AW", "ER"), "e": ("EH",), "u": ("UW",),
}

# Stress, syllable and variant marks espeak attaches to a base mnemonic (t#, i@3, 'a).
_ESPEAK_MARKS = re.compile(r"[',%=;~#\-\^!*|/]+")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


class AlignmentError(Exception):
    """Speech and words could not be aligned (or nothing was recognised); the message says why."""


@dataclass(frozen=True)
class Phone:
    """One aligned phone: ARPAbet symbol (or SIL) and its span in seconds from the audio's start."""

    symbol: str
    start: float
    end: float
    word: str


def model_paths() -> dict[str, str]:
    """Paths of the en-us acoustic model, dictionary and language model inside the pocketsphinx wheel."""
    from pocketsphinx import get_model_path

    root = os.path.join(get_model_path(), "en-us")
    return {"hmm": os.path.join(root, "en-us"), "dict": os.path.join(root, "cmudict-en-us.dict"),
            "lm": os.path.join(root, "en-us.lm.bin")}


def normalise_transcript(text: str) -> list[str]:
    """Lower-case words of a transcript, punctuation dropped, curly apostrophes made straight."""
    text = unicodedata.normalize("NFKC", text or "").replace("\u2019", "'").replace("\u2018", "'").lower()
    return _WORD.findall(text)


def espeak_to_arpabet(symbols: Sequence[str]) -> list[str]:
    """Map espeak-ng English mnemonics to ARPAbet; symbols with no English counterpart are dropped."""
    phones: list[str] = []
    for symbol in symbols:
        base = _ESPEAK_MARKS.sub("", symbol.strip())
        for candidate in (base, base.rstrip("0123456789"), base.replace(":", "").rstrip("0123456789")):
            if candidate in ESPEAK_TO_ARPABET:
                phones.extend(ESPEAK_TO_ARPABET[candidate])
                break
    return phones


def arpabet_to_espeak(symbol: str) -> str:
    """The espeak-ng mnemonic for an ARPAbet phone (stress digits ignored); pauses and fillers become "_"."""
    base = symbol.upper().rstrip("012")
    return ARPABET_TO_ESPEAK.get(base, "_")


def _decoder(kind: str, beam: float = 1e-48):
    """A new pocketsphinx decoder: "align" (dictionary only) or "recognise" (with the language model).

    Built for each recording (0.1-0.4 s): a decoder's noise estimate adapts to all it has heard, so one
    reused across rows would make a row's timings depend on the rows before it."""
    from pocketsphinx import Decoder

    paths = model_paths()
    if kind == "recognise":
        return Decoder(hmm=paths["hmm"], dict=paths["dict"], lm=paths["lm"], loglevel="FATAL")
    # lw=1: the word graph's silence and filler transitions weigh little against the acoustics.
    return Decoder(hmm=paths["hmm"], dict=paths["dict"], lm=None, bestpath=False, beam=beam, wbeam=beam * 1e20,
                   pbeam=beam, lw=1.0, loglevel="FATAL")


def _pcm(audio: np.ndarray, sample_rate: int) -> bytes:
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    if sample_rate != ALIGN_SAMPLE_RATE:
        from scipy.signal import resample_poly

        divisor = np.gcd(int(sample_rate), ALIGN_SAMPLE_RATE)
        samples = resample_poly(samples, ALIGN_SAMPLE_RATE // divisor, int(sample_rate) // divisor)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    # Quiet recordings are scaled up: the acoustic model's features expect a usable level.
    gain = min(0.9 / peak, 30.0) if peak > 0 else 1.0
    return (np.clip(samples * np.float32(gain), -1.0, 1.0) * 32767).astype(np.int16).tobytes()


_FRAME_BYTES = 2 * int(ALIGN_SAMPLE_RATE * _FRAME_S)


def _decode(decoder, pcm: bytes) -> None:
    decoder.start_utt()
    decoder.process_raw(pcm, no_search=False, full_utt=True)
    decoder.end_utt()


def _bare_word(name: str) -> str:
    """A dictionary word without its alternative-pronunciation mark: word(2) -> word."""
    return re.sub(r"\(\d+\)$", "", name)


def _quietness(pcm: bytes) -> np.ndarray:
    """Mean power of each 10 ms frame of 16-bit PCM, smoothed over 100 ms."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    step = _FRAME_BYTES // 2
    total = samples.size // step + (samples.size % step > 0)
    padded = np.zeros(total * step, np.float32)
    padded[:samples.size] = samples
    energy = np.mean(np.square(padded.reshape(total, step)), axis=1)
    return np.convolve(energy, np.ones(10) / 10.0, mode="same")


def _quiet_cut(loudness: np.ndarray, start: int, window: int) -> int:
    """The quietest frame of the last third of the window [start, start + window)."""
    lo = start + (2 * window) // 3
    return lo + int(np.argmin(loudness[lo:start + window]))


def speech_windows(pcm: bytes, window_seconds: float) -> list[tuple[int, int]]:
    """(start, end) frame spans covering 16-bit PCM, each at most about window_seconds long, cut at the
    quietest 100 ms of each window's last third so a cut falls in a pause rather than in a word."""
    loudness = _quietness(pcm)
    total = loudness.size
    window = max(10, int(round(window_seconds / _FRAME_S)))
    spans, start = [], 0
    while total - start > window:
        cut = _quiet_cut(loudness, start, window)
        spans.append((start, cut))
        start = cut
    spans.append((start, total))
    return spans


def recognise(audio: np.ndarray, sample_rate: int, window_seconds: float = 30.0) -> list[str]:
    """Words pocketsphinx's en-us language model hears in the audio (fillers left out); may be empty.
    A long recording is heard window by window (see speech_windows)."""
    pcm = _pcm(audio, sample_rate)
    return [word for words in _recognise_windows(pcm, window_seconds) for word in words[2]]


def _recognise_windows(pcm: bytes, window_seconds: float) -> list[tuple[int, int, list[str]]]:
    """(start frame, end frame, words heard) per window of the PCM."""
    decoder = _decoder("recognise")
    heard = []
    for start, end in speech_windows(pcm, window_seconds):
        _decode(decoder, pcm[start * _FRAME_BYTES:end * _FRAME_BYTES])
        hypothesis = decoder.hyp()
        words = hypothesis.hypstr.split() if hypothesis is not None and hypothesis.hypstr else []
        # Alternative pronunciations are named word(2); the dictionary entry is the bare word.
        heard.append((start, end, [_bare_word(word) for word in words]))
    return heard


def _ensure_words(decoder, words: Sequence[str], pronounce: Callable[[str], list[str]]) -> list[str]:
    """Add missing words to the decoder's dictionary; returns the words that have no pronunciation at all."""
    unknown = []
    for word in dict.fromkeys(words):
        if decoder.lookup_word(word) is not None:
            continue
        phones = espeak_to_arpabet(pronounce(word))
        if phones:
            decoder.add_word(word, " ".join(phones), True)
        else:
            unknown.append(word)
    return unknown


Fit = Callable[..., list[Phone]]


def _prepare(words: Sequence[str], pcm: bytes, pronounce: Callable[[str], list[str]], config: AlignmentConfig) -> Fit:
    """A function fit(span, span_words, offset_frames, widen=False) that force-aligns words to a span of the PCM
    (see _align_span) at config.beam; with `widen`, a span that finds no path is tried once more at
    config.retry_beam. AlignmentError now for an unpronounceable word or more words than the audio's length can
    hold. Windows do not widen: a window's words that do not fit tell that its cut is misplaced (_align_windows)."""
    spell = functools.cache(pronounce)  # espeak-ng is asked once per word, whichever decoder needs it
    decoder = _decoder("align", config.beam)
    unknown = _ensure_words(decoder, words, spell)
    if unknown:
        raise AlignmentError(f"no pronunciation for {', '.join(repr(w) for w in unknown[:3])}")
    seconds = len(pcm) / 2 / ALIGN_SAMPLE_RATE
    if len(words) > config.max_words_per_second * seconds + 2:
        raise AlignmentError(f"{len(words)} words cannot be spoken in {seconds:.1f} s")

    @functools.cache
    def wider():  # built on the recording's first retry
        retry = _decoder("align", config.retry_beam)
        _ensure_words(retry, words, spell)
        return retry

    def fit(span: bytes, span_words: Sequence[str], offset_frames: int, widen: bool = False) -> list[Phone]:
        try:
            return _align_span(decoder, span, span_words, offset_frames)
        except AlignmentError:
            if not widen or config.retry_beam >= config.beam:
                raise
        return _align_span(wider(), span, span_words, offset_frames)

    return fit


def _align_span(decoder, pcm: bytes, words: Sequence[str], offset_frames: int) -> list[Phone]:
    """Phones of words force-aligned to one span of PCM, timed from the start of the whole clip."""
    try:
        # 1. Word pass: an FSG of the words with optional silences between them.
        decoder.set_align_text(" ".join(words))
        _decode(decoder, pcm)
        # 2. Phone and state pass over the word segmentation.
        decoder.set_alignment()
        _decode(decoder, pcm)
        alignment = decoder.get_alignment()
    except RuntimeError as error:
        raise AlignmentError(f"the aligner failed ({error})") from None
    phones: list[Phone] = []
    if alignment is not None:
        for word in alignment:
            name = _bare_word(word.name)
            for phone in word:
                start = (offset_frames + phone.start) * _FRAME_S
                phones.append(Phone(phone.name, start, start + phone.duration * _FRAME_S, name))
    return phones


def _words_consumed(found: Sequence[str], ahead: Sequence[str]) -> int:
    """How many words of `ahead` the recognised words `found` cover: an edit-distance alignment of all
    of `found` against a prefix of `ahead` (each missed, extra or wrong word costs 1); among the
    cheapest prefixes, the one closest to len(found)."""
    previous = list(range(len(ahead) + 1))
    for i, word in enumerate(found, 1):
        row = [i] + [0] * len(ahead)
        for j, other in enumerate(ahead, 1):
            row[j] = min(previous[j - 1] + (word != other), previous[j] + 1, row[j - 1] + 1)
        previous = row
    best = min(previous)
    return min((j for j, cost in enumerate(previous) if cost == best), key=lambda j: abs(j - len(found)))


def _transcript_cuts(heard: list[tuple[int, int, list[str]]], words: Sequence[str]) -> list[int]:
    """Where the transcript breaks between recognition windows: index i is the number of transcript
    words spoken before window i ends. Each window's recognised words are aligned (edit distance) to
    the transcript just after the previous cut, so a repeated phrase elsewhere cannot pull a cut away."""
    cuts, pointer = [], 0
    for _, _, found in heard[:-1]:
        ahead = words[pointer:pointer + 2 * len(found) + 20]
        pointer = min(len(words), pointer + _words_consumed(found, ahead))
        cuts.append(pointer)
    cuts.append(len(words))
    return cuts


def _align_windows(fit: Fit, pcm: bytes, spans: list[tuple[int, int, list[str]]]) -> list[Phone]:
    """Align each window's words in that window. A window whose words do not fit it is joined to the
    next one and tried again; the last one, to the one before it (a boundary misplaced by the
    recognition costs one longer window)."""
    done: list[tuple[int, int, list[str], list[Phone]]] = []
    queue = [span for span in spans]
    while queue:
        start, end, found = queue.pop(0)
        try:
            done.append((start, end, found, fit(pcm[start * _FRAME_BYTES:end * _FRAME_BYTES], found, start)
                         if found else []))
            continue
        except AlignmentError:
            if queue:
                following = queue.pop(0)
                queue.insert(0, (start, following[1], found + following[2]))
            elif done:
                before = done.pop()
                queue.insert(0, (before[0], end, before[2] + found))
            else:
                raise
    return [phone for *_, phones in done for phone in phones]


def align(audio: np.ndarray, sample_rate: int, words: Sequence[str], pronounce: Callable[[str], list[str]],
          config: AlignmentConfig) -> list[Phone]:
    """Force-align words to the audio; returns every phone (silences as SIL) in time order.

    `pronounce(word)` gives espeak-ng mnemonics for a word the dictionary lacks. Raises AlignmentError
    when a word cannot be pronounced or the decoder cannot fit the words to the audio. A recording
    longer than config.window_seconds (plus its margin) is cut into windows at quiet moments; the
    words recognised in each window place the transcript's words in it, and each window is aligned
    on its own, so time and memory grow linearly with the length.
    """
    words = [word for word in words if word]
    if not words:
        raise AlignmentError("no words to align")
    pcm = _pcm(audio, sample_rate)
    fit = _prepare(words, pcm, pronounce, config)
    total = len(pcm) // _FRAME_BYTES
    if total * _FRAME_S <= config.window_seconds + config.window_margin_seconds:
        phones = fit(pcm, words, 0, widen=True)
    else:
        heard = _recognise_windows(pcm, config.window_seconds)
        cuts = _transcript_cuts(heard, words)
        spans = [(start, end, list(words[first:last]))
                 for (start, end, _), first, last in zip(heard, [0] + cuts[:-1], cuts)]
        phones = _align_windows(fit, pcm, spans)
    spoken = [phone for phone in phones if phone.symbol.upper() != "SIL"]
    if not spoken:
        raise AlignmentError("the words could not be fitted to the audio")
    return phones


def _align_heard(pcm: bytes, heard: list[tuple[int, int, list[str]]], words: list[str],
                 pronounce: Callable[[str], list[str]], config: AlignmentConfig) -> list[Phone]:
    """Align recognised words window by window, each window's own words in that window (see
    _recognise_windows); AlignmentError when they do not fit."""
    phones = _align_windows(_prepare(words, pcm, pronounce, config), pcm, heard)
    if not any(phone.symbol.upper() != "SIL" for phone in phones):
        raise AlignmentError("the words could not be fitted to the audio")
    return phones


def espeak_phonemes(phones: Sequence[Phone]) -> list[tuple[str, float, float]]:
    """(espeak mnemonic, start_s, end_s) per aligned phone, the form the viseme code reads."""
    return [(arpabet_to_espeak(p.symbol), round(p.start, 4), round(p.end, 4)) for p in phones if p.end > p.start]


@dataclass(frozen=True)
class SpeechTiming:
    """How a recording's visemes are driven: `method` is "aligned" (phonemes set) or "audio" (features)."""

    method: str
    phonemes: list[tuple[str, float, float]]
    words: list[str]
    """The words aligned: the transcript's, or the recognised ones."""
    warnings: list[str]


def is_aligned_language(language: str, config: AlignmentConfig) -> bool:
    """Whether a row's language is one the en-us aligner handles ("en-gb", "en_us" ... count as "en")."""
    base = (language or "").strip().lower().replace("_", "-").split("+", 1)[0].split("-", 1)[0]
    return base in config.languages


def time_speech(audio: np.ndarray, sample_rate: int, transcript: str | None, language: str,
                pronounce: Callable[[str], list[str]], config: AlignmentConfig) -> SpeechTiming:
    """Phoneme timings of a recording, or the audio-feature method with the reason recorded.

    English with a transcript: aligned, or AlignmentError when the transcript has no words or does not fit.
    English without one: recognised, then aligned; falls back to "audio" with a warning when nothing is
    recognised. Other languages: "audio" (a transcript is kept but cannot be aligned, with a warning).
    """
    if not is_aligned_language(language, config):
        notes = [f"transcript not aligned: forced alignment covers English only, not '{language}'; "
                 "lips follow the audio"] if transcript else []
        return SpeechTiming("audio", [], [], notes)
    if transcript is not None:
        words = normalise_transcript(transcript)
        if not words:
            raise AlignmentError("transcript has no words")
        return SpeechTiming("aligned", espeak_phonemes(align(audio, sample_rate, words, pronounce, config)),
                            words, [])
    if not config.recognise_untranscribed:
        return SpeechTiming("audio", [], [], [])
    pcm = _pcm(audio, sample_rate)
    heard = _recognise_windows(pcm, config.window_seconds)
    words = [word for _, _, found in heard for word in found]
    if not words:
        return SpeechTiming("audio", [], [], ["no words recognised in the audio; lips follow the audio"])
    try:
        phones = _align_heard(pcm, heard, words, pronounce, config)
    except AlignmentError as error:
        return SpeechTiming("audio", [], words, [f"recognised words could not be aligned ({error}); "
                                                 "lips follow the audio"])
    return SpeechTiming("aligned", espeak_phonemes(phones), words, [])
