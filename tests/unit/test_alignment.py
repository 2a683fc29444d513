"""Forced alignment of English speech (pocketsphinx), the language fallback and plosive closures of the
audio-feature path, on short espeak-ng utterances and tiny synthetic signals."""

import numpy as np
import pytest

from tasks.animate.audio_features import HOP_S, analyse, plosive_closures
from tasks.animate.config import AnimationConfig
from tasks.animate.visemes import weights_from_phonemes
from tasks.common.arkit import INDEX
from dataclasses import replace

from tasks.ingest.alignment import (AlignmentError, _pcm, align, arpabet_to_espeak, espeak_to_arpabet,
                                    normalise_transcript, speech_windows, time_speech)
from tasks.ingest.config import AlignmentConfig, IngestConfig
from tasks.ingest.speech import spoken_phonemes, synthesize

CONFIG = AlignmentConfig()
SENTENCE = "Maybe Bob will bring the map by the pump, my friend."


def pronounce(word):
    return spoken_phonemes(word, CONFIG.pronunciation_voice)


@pytest.fixture(scope="module")
def speech():
    # A voice and rate the aligner's settings were not chosen on.
    return synthesize(SENTENCE, "en-us+f4", IngestConfig(tts_rate_wpm=125))


def bilabial_spans(phonemes, symbols):
    return [(start, end) for symbol, start, end in phonemes if symbol in symbols]


def test_aligned_bilabials_match_espeaks_own_phoneme_events(speech):
    phones = align(speech.audio, speech.sample_rate, normalise_transcript(SENTENCE), pronounce, CONFIG)
    expected = bilabial_spans(speech.phonemes, {"p", "b", "m"})
    found = bilabial_spans([(p.symbol, p.start, p.end) for p in phones], {"P", "B", "M"})
    assert len(found) == len(expected) == 12
    boundaries = np.abs(np.array(found) - np.array(expected))
    assert np.median(boundaries) <= 0.04, boundaries
    # Every aligned bilabial's centre lies in espeak's own span of it, give or take 60 ms.
    for (start, end), (lo, hi) in zip(found, expected):
        assert lo - 0.06 <= 0.5 * (start + end) <= hi + 0.06, ((start, end), (lo, hi))


def test_aligned_phonemes_drive_closed_lips_on_bilabials(speech):
    timing = time_speech(speech.audio, speech.sample_rate, SENTENCE, "en-us", pronounce, CONFIG)
    assert timing.method == "aligned" and timing.words[:3] == ["maybe", "bob", "will"]
    fps = 25.0
    weights = weights_from_phonemes(timing.phonemes, int(speech.duration_seconds * fps), fps, AnimationConfig())
    sealed = weights[:, INDEX["mouthClose"]] >= 0.8 * weights[:, INDEX["jawOpen"]] - 1e-6
    # Each bilabial of espeak's own timing shows sealed lips on a frame on screen within 40 ms of its centre (the
    # aligner's centres lie within 60 ms of espeak's; the seal follows the aligned timing frame by frame).
    for start, end in bilabial_spans(speech.phonemes, {"p", "b", "m"}):
        centre = 0.5 * (start + end)
        near = slice(int(np.floor((centre - 0.04) * fps)), int(np.floor((centre + 0.04) * fps)) + 1)
        assert sealed[near].any(), (start, end)


def test_a_recording_is_timed_the_same_whatever_its_worker_heard_before(speech):
    # A worker times many rows in turn; a quiet, faster, lower voice heard in between must not move this
    # recording's recognised words or phone timings (pocketsphinx's noise estimate adapts to what it hears).
    other = synthesize("Nobody expected the train to arrive so early.", "en-us+m3", IngestConfig(tts_rate_wpm=190))
    first = time_speech(speech.audio, speech.sample_rate, None, "en", pronounce, CONFIG)
    aligned = time_speech(speech.audio, speech.sample_rate, SENTENCE, "en", pronounce, CONFIG)
    time_speech(other.audio * 0.2, other.sample_rate, None, "en", pronounce, CONFIG)
    time_speech(other.audio * 0.2, other.sample_rate, "Nobody expected the train to arrive so early.", "en",
                pronounce, CONFIG)
    assert first.method == "aligned" and len(first.phonemes) > 20
    assert time_speech(speech.audio, speech.sample_rate, None, "en", pronounce, CONFIG) == first
    assert time_speech(speech.audio, speech.sample_rate, SENTENCE, "en", pronounce, CONFIG) == aligned


def test_words_missing_from_the_dictionary_are_spelled_by_espeak():
    assert espeak_to_arpabet(["z", "o@", "b", "l", "'a", "k", "s"]) == ["Z", "AO", "R", "B", "L", "AE", "K", "S"]
    assert espeak_to_arpabet(["l", "E", "t#", "3"]) == ["L", "EH", "T", "ER"]
    assert arpabet_to_espeak("AH0") == "V" and arpabet_to_espeak("SIL") == "_" and arpabet_to_espeak("+NSN+") == "_"
    text = "Zorblax paid Bob."
    spoken = synthesize(text, "en-us", IngestConfig())
    phones = align(spoken.audio, spoken.sample_rate, normalise_transcript(text), pronounce, CONFIG)
    assert [p.symbol for p in phones if p.word == "zorblax"] == ["Z", "AO", "R", "B", "L", "AE", "K", "S"]


def test_transcript_normalisation_and_bad_transcripts(speech):
    assert normalise_transcript("Don\u2019t stop, Bob\u2014it's 2 o'clock!") == ["don't", "stop", "bob", "it's", "2",
                                                                              "o'clock"]
    with pytest.raises(AlignmentError, match="transcript has no words"):
        time_speech(speech.audio, speech.sample_rate, " ... !? ", "en", pronounce, CONFIG)
    with pytest.raises(AlignmentError, match="cannot be spoken"):
        time_speech(speech.audio, speech.sample_rate, " ".join(["word"] * 100), "en", pronounce, CONFIG)


def test_other_languages_fall_back_to_the_audio_features_with_a_warning():
    spoken = synthesize("Bonjour, je m'appelle Marie.", "fr", IngestConfig())
    timing = time_speech(spoken.audio, spoken.sample_rate, "Bonjour, je m'appelle Marie.", "fr", pronounce, CONFIG)
    assert timing.method == "audio" and timing.phonemes == []
    assert len(timing.warnings) == 1 and "English only" in timing.warnings[0]
    silent = time_speech(spoken.audio, spoken.sample_rate, None, "fr", pronounce, CONFIG)
    assert silent.method == "audio" and silent.warnings == []


def test_english_without_a_transcript_is_recognised_then_aligned(speech):
    timing = time_speech(speech.audio, speech.sample_rate, None, "en", pronounce, CONFIG)
    assert timing.method == "aligned" and timing.words and timing.phonemes
    assert all(end > start for _, start, end in timing.phonemes)
    off = time_speech(speech.audio, speech.sample_rate, None, "en", pronounce,
                      AlignmentConfig(recognise_untranscribed=False))
    assert off.method == "audio"


def test_plosive_closures_cover_the_stop_gap_before_a_burst():
    rate = 16000
    t = np.arange(int(0.3 * rate)) / rate
    vowel = 0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(t.size) ** 0.1
    gap = np.zeros(int(0.08 * rate))
    burst = 0.4 * np.random.default_rng(0).standard_normal(int(0.015 * rate))
    audio = np.concatenate([vowel, gap, burst, vowel]).astype(np.float32)
    config = AnimationConfig()
    closure = plosive_closures(analyse(audio, rate, config), config)
    times = np.arange(closure.size) * HOP_S
    in_gap = (times > 0.32) & (times < 0.37)
    in_vowels = (times > 0.05) & (times < 0.27) | (times > 0.42) & (times < 0.65)
    assert closure[in_gap].min() == 1.0 and closure[in_vowels].max() == 0.0
    off = AnimationConfig(plosive_burst_db=0.0)
    assert plosive_closures(analyse(audio, rate, off), off).max() == 0.0


LONG_TEXT = ("Maybe Bob will bring the map by the pump. The boat passed the bay at midnight. "
             "My brother bought a brown basket. Please pass me the bread and the butter.")


@pytest.fixture(scope="module")
def long_speech():
    return synthesize(LONG_TEXT, "en-us+f4", IngestConfig(tts_rate_wpm=125))


def test_a_long_recording_is_aligned_window_by_window_like_a_whole_one(long_speech):
    assert long_speech.duration_seconds > 9.0
    words = normalise_transcript(LONG_TEXT)
    whole = align(long_speech.audio, long_speech.sample_rate, words, pronounce, CONFIG)
    # Windows of 3 s: the clip is cut into several pieces, recognised and aligned one by one.
    windowed = align(long_speech.audio, long_speech.sample_rate, words, pronounce,
                     replace(CONFIG, window_seconds=3.0, window_margin_seconds=1.0))
    spoken = [p for p in windowed if p.symbol != "SIL"]
    # Every word is aligned once, in order, and phones follow each other in time.
    assert [p.word for p in spoken if p is spoken[0] or p.word != spoken[spoken.index(p) - 1].word][:3] == \
        ["maybe", "bob", "will"]
    assert all(a.end <= b.start + 1e-6 for a, b in zip(windowed, windowed[1:]))
    assert len(spoken) == len([p for p in whole if p.symbol != "SIL"])
    # The bilabials land where espeak put them, as in a whole-clip alignment.
    expected = bilabial_spans(long_speech.phonemes, {"p", "b", "m"})
    found = bilabial_spans([(p.symbol, p.start, p.end) for p in spoken], {"P", "B", "M"})
    assert len(found) == len(expected)
    assert np.median(np.abs(np.array(found) - np.array(expected))) <= 0.04


def test_recognition_windows_cut_in_pauses():
    rate = 16000
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 300 * t)
    # 1 s tones with 0.3 s pauses, 8 times: windows of 4 s must end inside a pause.
    gap = np.zeros(int(0.3 * rate))
    signal = np.concatenate([np.concatenate([tone, gap]) for _ in range(8)])
    spans = speech_windows(_pcm(signal, rate), 4.0)
    assert spans[0][0] == 0 and spans[-1][1] == int(np.ceil(signal.size / 160))
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and len(spans) >= 3
    for _, end in spans[:-1]:
        assert end - start_of_cycle(end) >= 100  # the cut is at least 1 s into a 1.3 s cycle: in the pause
        assert end - start_of_cycle(end) <= 130


def start_of_cycle(frame: int) -> int:
    return (frame // 130) * 130


def test_a_recording_the_first_beam_finds_no_path_through_is_aligned_at_the_wider_retry_beam(tmp_path):
    # A recording made with the espeak-ng command (British voice m2, 170 wpm, 22,050 Hz), with a sentence the
    # aligner's settings were not chosen on: at config.beam pocketsphinx finds no path through it, at
    # config.retry_beam it does.
    import subprocess

    from scipy.io import wavfile

    sentence = "Nobody expected the train to arrive so early on a cold winter morning."
    subprocess.run(["espeak-ng", "-v", "en-gb+m2", "-s", "170", "-w", str(tmp_path / "m2.wav"), sentence],
                   check=True, timeout=60)
    rate, samples = wavfile.read(tmp_path / "m2.wav")
    audio = samples.astype(np.float32) / 32768.0
    words = normalise_transcript(sentence)
    with pytest.raises(AlignmentError, match="aligner failed"):
        align(audio, rate, words, pronounce, replace(CONFIG, retry_beam=CONFIG.beam))
    phones = align(audio, rate, words, pronounce, CONFIG)
    assert list(dict.fromkeys(phone.word for phone in phones if phone.symbol != "SIL")) == words
    assert phones[-1].end <= len(audio) / rate + 0.05
