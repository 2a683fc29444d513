"""Phoneme-driven mouth weights: closures, openings, silence, smoothing and the symbol table."""

from dataclasses import replace

import numpy as np
import pytest

from tasks.animate.config import AnimationConfig
from tasks.animate.visemes import (MOUTH_INDICES, mouth_open_series, normalise_symbol, phoneme_visemes,
                                   weights_from_phonemes)
from tasks.common.arkit import INDEX

FPS = 25.0
CONFIG = AnimationConfig()


def frame_at(seconds: float) -> int:
    return int(round(seconds * FPS))


def test_shapes_dtype_and_range():
    rng = np.random.default_rng(3)
    symbols = ["a", "m", "s", "oU", "t", "i:", "_", "f", "u:", "k", "E", "zz?"]
    t = 0.1
    phonemes = []
    for _ in range(40):
        length = rng.uniform(0.03, 0.2)
        phonemes.append((str(rng.choice(symbols)), t, t + length))
        t += length
    n_frames = frame_at(t + 0.3)
    weights = weights_from_phonemes(phonemes, n_frames, FPS, replace(CONFIG, viseme_gain=1.6))
    assert weights.shape == (n_frames, 52)
    assert weights.dtype == np.float32
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    # Speech never touches eyes or brows.
    non_mouth = np.setdiff1d(np.arange(52), MOUTH_INDICES)
    assert np.all(weights[:, non_mouth] == 0.0)


def test_bilabial_seals_lips_between_open_vowels():
    phonemes = [("_", 0.0, 0.3), ("a", 0.3, 0.6), ("m", 0.6, 0.7), ("a", 0.7, 1.0), ("_", 1.0, 1.5)]
    weights = weights_from_phonemes(phonemes, frame_at(1.5), FPS, CONFIG)
    opening = mouth_open_series(weights)
    closed = frame_at(0.65 - CONFIG.anticipation_s)
    assert opening[closed] < 0.02
    assert weights[closed, INDEX["mouthClose"]] >= weights[closed, INDEX["jawOpen"]] - 1e-6
    assert opening[frame_at(0.45)] > 0.4 and opening[frame_at(0.85)] > 0.4


def test_short_plosive_still_closes_on_a_frame():
    # A 35 ms /p/ is shorter than one 40 ms frame.
    phonemes = [("a", 0.2, 0.6), ("p", 0.6, 0.635), ("a", 0.635, 1.0)]
    opening = mouth_open_series(weights_from_phonemes(phonemes, frame_at(1.2), FPS, CONFIG))
    around = opening[frame_at(0.5):frame_at(0.75)]
    assert around.min() < 0.02
    assert around.max() > 0.4


def test_open_vowel_opens_more_than_close_vowel_and_rounded_vowel_puckers():
    def held(symbol):
        weights = weights_from_phonemes([(symbol, 0.2, 0.8)], frame_at(1.0), FPS, CONFIG)
        return weights[frame_at(0.5)]

    open_a, close_i, round_u = held("A:"), held("i:"), held("u:")
    assert open_a[INDEX["jawOpen"]] > 0.5
    assert open_a[INDEX["jawOpen"]] > close_i[INDEX["jawOpen"]] + 0.2
    assert round_u[INDEX["mouthPucker"]] > 0.4 > open_a[INDEX["mouthPucker"]]
    assert close_i[INDEX["mouthSmileLeft"]] > 0.1


def test_silence_and_pauses_are_exactly_closed():
    phonemes = [("_:", 0.0, 0.5), ("a", 0.5, 0.8), ("_", 0.8, 2.0)]
    weights = weights_from_phonemes(phonemes, frame_at(2.0), FPS, CONFIG)
    assert np.all(weights[: frame_at(0.3)] == 0.0)
    assert np.all(weights[frame_at(1.1):] == 0.0)
    assert weights[frame_at(0.65), INDEX["jawOpen"]] > 0.3
    assert np.all(weights_from_phonemes([], 10, FPS, CONFIG) == 0.0)
    assert np.all(weights_from_phonemes([("_", 0.0, 1.0)], 25, FPS, CONFIG) == 0.0)


def test_smoothing_limits_frame_to_frame_jumps():
    phonemes = []
    t = 0.2
    for _ in range(6):
        phonemes += [("A:", t, t + 0.12), ("t", t + 0.12, t + 0.2)]
        t += 0.2
    n_frames = frame_at(t + 0.3)
    smooth = weights_from_phonemes(phonemes, n_frames, FPS, CONFIG)[:, INDEX["jawOpen"]]
    sharp = weights_from_phonemes(phonemes, n_frames, FPS, replace(CONFIG, coarticulation_sigma_s=1e-4))
    sharp = sharp[:, INDEX["jawOpen"]]
    assert np.abs(np.diff(smooth)).max() < np.abs(np.diff(sharp)).max()
    assert np.abs(np.diff(smooth)).max() < 0.4


def test_anticipation_moves_onset_earlier():
    phonemes = [("a", 0.6, 1.0)]
    early = weights_from_phonemes(phonemes, 40, FPS, replace(CONFIG, anticipation_s=0.1))[:, INDEX["jawOpen"]]
    late = weights_from_phonemes(phonemes, 40, FPS, replace(CONFIG, anticipation_s=0.0))[:, INDEX["jawOpen"]]
    assert np.argmax(early > 0.3) < np.argmax(late > 0.3)


@pytest.mark.parametrize("symbol, expected", [
    ("'a:", ("aa",)), ("z2", ("SS",)), ("aI", ("aa", "ih")), ("oU", ("oh", "ou")), ("_:", ("sil",)),
    ("_!", ("sil",)), ("m", ("PP",)), ("tS", ("CH",)), ("O~", ("oh",)), ("n^", ("nn",)), ("@-", ("E",)),
    ("T", ("TH",)), ("%I", ("ih",)), ("H", ("E",)), ("Zk", ("CH", "kk")),
])
def test_symbol_table(symbol, expected):
    assert phoneme_visemes(symbol) == expected


def test_bare_modifier_continues_previous_phoneme():
    assert phoneme_visemes(";") is None
    assert normalise_symbol(",t#") == "t"
    # ";" after "b" keeps the lips closed instead of opening them.
    weights = weights_from_phonemes([("a", 0.1, 0.4), ("b", 0.4, 0.45), (";", 0.45, 0.5), ("a", 0.5, 0.9)],
                                    frame_at(1.0), FPS, CONFIG)
    assert mouth_open_series(weights)[frame_at(0.47 - CONFIG.anticipation_s)] < 0.02


@pytest.mark.parametrize("duration", [0.04, 0.08])
def test_a_closure_seals_the_frame_on_screen_at_its_midpoint_and_no_frame_wholly_outside_it(duration):
    # A /p/ between open vowels, at five phases of the frame grid (frame i is on screen from i/FPS to (i+1)/FPS).
    for offset in np.linspace(0.0, 0.04, 5, endpoint=False):
        start = 1.0 + offset
        phonemes = [("A:", 0.5, start), ("p", start, start + duration), ("A:", start + duration, start + 0.6)]
        opening = mouth_open_series(weights_from_phonemes(phonemes, 50, FPS, CONFIG))
        assert opening[int(np.floor((start + duration / 2) * FPS))] < 0.02
        first, last = int(np.floor(start * FPS)), int(np.floor((start + duration - 1e-9) * FPS))
        # A frame on screen only while the vowel sounds shows it (at most eased toward the closure).
        outside = [first - 2, first - 1, last + 1, last + 2]
        assert opening[outside].min() > 0.1, (offset, opening[first - 2:last + 3].round(2))


def test_a_frame_shown_across_a_closures_onset_is_half_sealed_and_its_midpoint_frame_whole():
    # /b/ from 1.02 s to 1.14 s: frame 25 is on screen 1.00-1.04 s, its middle on the onset; frame 27 on the midpoint.
    phonemes = [("A:", 0.5, 1.02), ("b", 1.02, 1.14), ("A:", 1.14, 1.6)]
    weights = weights_from_phonemes(phonemes, 50, FPS, CONFIG)
    opening = mouth_open_series(weights)
    vowel = opening[frame_at(0.8)]
    assert opening[27] < 0.02
    # The lips are meeting on the onset's frame: neither open as in the vowel nor shut.
    assert 0.1 * vowel < opening[25] < 0.7 * vowel, (opening[22:30].round(3), vowel)
    sealed = weights[25, INDEX["mouthClose"]] / weights[25, INDEX["jawOpen"]]
    assert 0.3 < sealed < 0.8
