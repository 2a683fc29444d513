"""Language-independent lip sync from the audio signal alone.

Short-time features (loudness relative to the clip's speech level, low/high band energy, spectral centroid,
zero-crossing rate) are computed every 10 ms and mapped to mouth poses: loud, low-frequency (vowel) energy opens
the jaw; a low centroid rounds the lips, a high one spreads them; fricative noise keeps the jaw nearly shut with
the lower lip rolled in; deep energy dips inside speech briefly seal the lips, and so does the quiet stop gap before a plosive
burst (a sudden rise of the level after near-silence, as in /p b t k/). Silence (voice activity off) is an
exactly closed mouth. The poses then go through the same coarticulation smoothing as the phoneme path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tasks.animate.config import AnimationConfig
from tasks.animate.visemes import MOUTH_INDICES, coarticulate, frame_times, is_pause
from tasks.common.arkit import ARKIT_NAMES, INDEX

HOP_S = 0.01
"""Feature hop (s): the fine grid of the audio path."""
WINDOW_S = 0.03
"""Analysis window (s)."""

# Loudness range (dB below the clip's speech level) over which the jaw goes from shut to fully driven.
_LOUDNESS_RANGE_DB = 30.0
# Percentile of frame levels, among frames above the absolute floor, taken as the clip's speech level.
_SPEECH_LEVEL_PERCENTILE = 95.0
# Energy dip (dB below both neighbouring peaks within _DIP_REACH_S) where a lip closure starts and is complete.
_DIP_START_DB, _DIP_FULL_DB, _DIP_REACH_S = 6.0, 14.0, 0.12
# Smoothing (s) of the loudness gain, so the mouth does not flicker with the level's 10 ms ripple.
_GAIN_SMOOTHING_S = 0.02
# The loudest moments open the mouth this much more (before squaring) than the headroom level does.
_GAIN_OVERSHOOT = 1.1
# Voice that no aligned phoneme covers, for at least this long (s), is mouthed from the audio alone; phonemes
# count this far (s) beyond their bounds, so an aligner's boundary error is not taken for a missed word.
_UNALIGNED_MIN_S, _UNALIGNED_MARGIN_S = 0.12, 0.04
# Time (s) over which the mouth passes from the phonemes to the audio and back.
_UNALIGNED_EASE_S = 0.02
# An aligned pause whose median level is within this (dB) of the clip's speech level lies in speech, not silence.
_VOICED_PAUSE_DB = 20.0


@dataclass(frozen=True)
class AudioFeatures:
    """Per-hop features of a clip; arrays are (N,) for hops at times k * HOP_S."""

    level_db: np.ndarray
    """RMS level, dB full scale (-120 for digital silence)."""
    speech_level_db: float
    """Reference level of the clip's speech (dB FS); -inf when nothing is above the absolute floor."""
    low_fraction: np.ndarray
    """Share of 80–8000 Hz energy in 150–1000 Hz (first-formant region: high for open vowels)."""
    high_fraction: np.ndarray
    """Share of 80–8000 Hz energy above 3500 Hz (fricative noise)."""
    centroid_hz: np.ndarray
    """Spectral centroid over 80–4000 Hz (low for rounded vowels, high for spread ones)."""
    zero_crossing_rate: np.ndarray
    """Zero crossings per sample."""
    active: np.ndarray
    """Voice activity (bool)."""


# Hops analysed at once: the windowed frames of a whole long clip would not fit in memory (a 10-minute
# clip is 60,000 hops of 480 samples, several copies of 230 MB), a block of them is a few MB.
_HOPS_PER_BLOCK = 2048


def _hop_blocks(audio: np.ndarray, sample_rate: int):
    """Centred frames (n, W) of the clip, one per HOP_S, yielded a block of hops at a time."""
    hop = max(1, int(round(HOP_S * sample_rate)))
    width = max(hop, int(round(WINDOW_S * sample_rate)))
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_hops = max(1, int(np.ceil(samples.size / hop)))
    padded = np.pad(samples, (width // 2, width + n_hops * hop - samples.size))
    offsets = np.arange(width)[None, :]
    for first in range(0, n_hops, _HOPS_PER_BLOCK):
        hops = np.arange(first, min(n_hops, first + _HOPS_PER_BLOCK))
        yield padded[hops[:, None] * hop + offsets].astype(np.float64)


def _block_features(frames: np.ndarray, sample_rate: int) -> tuple[np.ndarray, ...]:
    """(rms, low fraction, high fraction, centroid, zero-crossing rate) of a block of frames."""
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    window = np.hanning(frames.shape[1])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    freqs = np.fft.rfftfreq(frames.shape[1], 1.0 / sample_rate)
    band = (freqs >= 80) & (freqs <= 8000)
    total = power[:, band].sum(axis=1) + 1e-12
    low_fraction = power[:, (freqs >= 150) & (freqs <= 1000)].sum(axis=1) / total
    high_fraction = power[:, freqs > 3500].sum(axis=1) / total
    centroid_band = (freqs >= 80) & (freqs <= 4000)
    centroid_power = power[:, centroid_band]
    centroid_hz = (centroid_power * freqs[centroid_band]).sum(axis=1) / (centroid_power.sum(axis=1) + 1e-12)
    signs = np.signbit(frames)
    zero_crossing_rate = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
    return rms, low_fraction, high_fraction, centroid_hz, zero_crossing_rate


def _fill_short_runs(mask: np.ndarray, value: bool, max_len: int) -> np.ndarray:
    """Flip runs equal to `value` shorter than max_len samples (interior runs only when value is False)."""
    out = mask.copy()
    n = out.size
    start = 0
    while start < n:
        end = start
        while end < n and out[end] == out[start]:
            end += 1
        if out[start] == value and end - start < max_len:
            interior = start > 0 and end < n
            if value or interior:
                out[start:end] = not value
        start = end
    return out


def analyse(audio: np.ndarray, sample_rate: int, config: AnimationConfig) -> AudioFeatures:
    """Compute the per-hop features and voice activity of a mono clip."""
    blocks = [_block_features(frames, sample_rate) for frames in _hop_blocks(audio, sample_rate)]
    rms, low_fraction, high_fraction, centroid_hz, zero_crossing_rate = (
        np.concatenate(parts) for parts in zip(*blocks))
    level_db = 20.0 * np.log10(np.maximum(rms, 1e-6))

    above_floor = level_db > config.vad_floor_dbfs
    if above_floor.any():
        speech_level_db = float(np.percentile(level_db[above_floor], _SPEECH_LEVEL_PERCENTILE))
    else:
        speech_level_db = float("-inf")
    active = above_floor & (level_db > speech_level_db - config.vad_relative_db)
    active = _fill_short_runs(active, False, int(round(config.vad_min_pause_s / HOP_S)))
    active = _fill_short_runs(active, True, int(round(config.vad_min_speech_s / HOP_S)))
    return AudioFeatures(level_db, speech_level_db, low_fraction, high_fraction, centroid_hz,
                         zero_crossing_rate, active)


def _frame_activity(active: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """A frame is active when any hop within its time span is."""
    grid = np.arange(active.size) * HOP_S
    times = frame_times(n_frames, fps)
    lo = np.searchsorted(grid, times - 0.5 / fps, side="left")
    hi = np.searchsorted(grid, times + 0.5 / fps, side="right")
    return np.array([bool(active[a:b].any()) if b > a else False for a, b in zip(lo, hi)], dtype=bool)


def voice_activity(audio: np.ndarray, sample_rate: int, n_frames: int, fps: float,
                   config: AnimationConfig) -> np.ndarray:
    """(T,) bool: whether someone is speaking at each frame."""
    return _frame_activity(analyse(audio, sample_rate, config).active, max(1, int(n_frames)), fps)


def loudness(features: AudioFeatures) -> np.ndarray:
    """(N,) loudness in [0, 1] relative to the clip's speech level; 0 where voice activity is off."""
    if not np.isfinite(features.speech_level_db):
        return np.zeros_like(features.level_db)
    relative = (features.level_db - (features.speech_level_db - _LOUDNESS_RANGE_DB)) / _LOUDNESS_RANGE_DB
    return np.clip(relative, 0.0, 1.0) * features.active


def frame_loudness(features: AudioFeatures, n_frames: int, fps: float) -> np.ndarray:
    """(T,) speech loudness in [0, 1] of analysed features at the frame times."""
    loud = loudness(features)
    grid = np.arange(loud.size) * HOP_S
    return np.interp(frame_times(max(1, int(n_frames)), fps), grid, loud, left=0.0, right=0.0)


def opening_gain(features: AudioFeatures, n_frames: int, fps: float, config: AnimationConfig) -> np.ndarray:
    """(T,) factor on the phoneme path's mouth opening from the recording's loudness: 0 at
    config.loudness_range_db below the clip's speech level, 1 at config.loudness_headroom_db below it, up to
    about 1.2 above. It rises with the square of the level in range, as a jaw widens with vocal effort.

    Sampled at the times the mouth shapes are (frame time plus anticipation). All ones when the range is 0 or
    the clip has no speech level.
    """
    from scipy.ndimage import gaussian_filter1d

    n_frames = max(1, int(n_frames))
    span = config.loudness_range_db - config.loudness_headroom_db
    if config.loudness_range_db <= 0 or span <= 0 or not np.isfinite(features.speech_level_db):
        return np.ones(n_frames)
    floor_db = features.speech_level_db - config.loudness_range_db
    gain = np.clip((features.level_db - floor_db) / span, 0.0, _GAIN_OVERSHOOT) ** 2
    gain = gaussian_filter1d(gain, _GAIN_SMOOTHING_S / HOP_S, mode="nearest")
    grid = np.arange(gain.size) * HOP_S
    return np.interp(frame_times(n_frames, fps) + config.anticipation_s, grid, gain, left=0.0, right=0.0)


def plosive_closures(features: AudioFeatures, config: AnimationConfig) -> np.ndarray:
    """(N,) 1 over the stop gap before each plosive burst inside or next to speech, else 0.

    A burst is a rise of config.plosive_burst_db within two hops; its gap is the run of hops before it that
    stay config.plosive_gap_db below the loudest hop of the 100 ms after the burst, at most
    config.plosive_max_closure_s long. The audio cannot tell /p b/ from /t k/, so every stop closes the
    lips; bilabials, the stops a viewer checks, close on time.
    """
    from scipy.ndimage import maximum_filter1d

    level = features.level_db
    n = level.size
    closure = np.zeros(n)
    if config.plosive_burst_db <= 0 or n < 4:
        return closure
    ahead = max(1, int(round(0.1 / HOP_S)))
    longest = max(1, int(round(config.plosive_max_closure_s / HOP_S)))
    after_peak = maximum_filter1d(level, size=ahead, origin=-(ahead // 2), mode="nearest")
    rise = np.full(n, -np.inf)
    rise[:-2] = level[2:] - level[:-2]
    bursts = np.flatnonzero((rise >= config.plosive_burst_db) & np.roll(features.active, -2))
    for burst in bursts:
        peak = after_peak[min(n - 1, burst + 2)]
        quiet = level <= peak - config.plosive_gap_db
        if not quiet[burst]:
            continue
        start = burst
        while start > 0 and burst - start < longest and quiet[start - 1]:
            start -= 1
        # A quiet stretch that reaches the limit is a pause before speech: close only its end.
        closure[max(start, burst - longest + 1):burst + 1] = 1.0
    return closure


def mouth_targets(features: AudioFeatures, config: AnimationConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-hop target poses (N, 52) and lip-closure track (N,) from the features."""
    from scipy.ndimage import maximum_filter1d

    n = features.level_db.size
    loud = loudness(features)
    active = features.active

    fricative = np.maximum(np.clip((features.high_fraction - 0.35) / 0.3, 0.0, 1.0),
                           np.clip((features.zero_crossing_rate - 0.25) / 0.2, 0.0, 1.0))
    vowel = np.clip(features.low_fraction / 0.6, 0.0, 1.0)
    jaw = 0.7 * loud ** 1.2 * (0.35 + 0.65 * vowel) * (1.0 - 0.7 * fricative)

    # Rounding and spreading are judged against the clip's own typical centroid: speaker independent.
    voiced = active & (fricative < 0.5) & (loud > 0.2)
    reference = float(np.median(features.centroid_hz[voiced])) if voiced.any() else 0.0
    if reference > 0:
        deviation = (features.centroid_hz - reference) / (0.35 * reference)
    else:
        deviation = np.zeros(n)
    rounding = np.clip(-deviation, 0.0, 1.0) * loud * (1.0 - fricative)
    spread = np.clip(deviation, 0.0, 1.0) * loud * (1.0 - fricative)

    # Energy dips between syllables: a level well below the peaks on both sides closes the lips briefly.
    reach = max(1, int(round(_DIP_REACH_S / HOP_S)))
    level = np.where(active, features.level_db, features.level_db.min())
    left_peak = maximum_filter1d(level, size=reach, origin=(reach - 1) // 2, mode="nearest")
    right_peak = maximum_filter1d(level, size=reach, origin=-(reach // 2), mode="nearest")
    depth = np.minimum(left_peak, right_peak) - level
    closure = np.clip((depth - _DIP_START_DB) / (_DIP_FULL_DB - _DIP_START_DB), 0.0, 1.0) * active
    if config is not None:
        closure = np.maximum(closure, plosive_closures(features, config))

    targets = np.zeros((n, len(ARKIT_NAMES)), np.float64)

    def put(name: str, values: np.ndarray) -> None:
        targets[:, INDEX[name]] += values

    put("jawOpen", jaw)
    for side in ("Left", "Right"):
        put(f"mouthLowerDown{side}", 0.35 * jaw)
        put(f"mouthUpperUp{side}", 0.12 * jaw + 0.12 * fricative * loud)
        put(f"mouthStretch{side}", 0.3 * spread)
        put(f"mouthSmile{side}", 0.15 * spread)
    put("mouthFunnel", 0.45 * rounding)
    put("mouthPucker", 0.55 * rounding)
    put("mouthRollLower", 0.3 * fricative * loud)
    targets[~active] = 0.0
    return targets, closure


def weights_from_audio(audio: np.ndarray, sample_rate: int, n_frames: int, fps: float,
                       config: AnimationConfig) -> np.ndarray:
    """(T, 52) float32 ARKit mouth weights in [0, 1] driven by the audio signal; exactly 0 in silent frames."""
    return mouth_from_features(analyse(audio, sample_rate, config), n_frames, fps, config)


def mouth_from_features(features: AudioFeatures, n_frames: int, fps: float, config: AnimationConfig) -> np.ndarray:
    """weights_from_audio on a clip already analysed."""
    n_frames = max(1, int(n_frames))
    targets, closure = mouth_targets(features, config)
    # Extend the grid past the end so smoothing and anticipation see silence after the clip.
    tail = int(np.ceil(1.0 / HOP_S))
    targets = np.pad(targets, ((0, tail), (0, 0)))
    closure = np.pad(closure, (0, tail))
    frames = coarticulate(targets, closure, HOP_S, n_frames, fps, config)
    active = np.pad(features.active, (0, tail))
    speaking = _frame_activity(active, n_frames, fps)
    # One frame of slack on each side keeps onsets/offsets (anticipation) instead of cutting them.
    speaking = speaking | np.roll(speaking, 1) * (np.arange(n_frames) > 0) | \
        np.roll(speaking, -1) * (np.arange(n_frames) < n_frames - 1)
    frames[np.ix_(~speaking, MOUTH_INDICES)] = 0.0
    return np.clip(frames, 0.0, 1.0).astype(np.float32)


def bridge_voiced_pauses(phonemes: Sequence[tuple[str, float, float]],
                         features: AudioFeatures) -> list[tuple[str, float, float]]:
    """The phonemes without the short pauses that lie in speech: each such pause's neighbours meet at its middle.

    A forced aligner may put its optional silence between two words a speaker ran together, and the mouth would
    shut over loud voice. Only a pause between two phonemes, no longer than the shortest stretch unaligned_voice
    mouths from the audio, is bridged; a longer one is left to that function.
    """
    timed = [[symbol, float(start), float(end)] for symbol, start, end in phonemes]
    longest = _UNALIGNED_MIN_S + 2 * _UNALIGNED_MARGIN_S
    bridged = set()
    for i in range(1, len(timed) - 1):
        symbol, start, end = timed[i]
        before, after = timed[i - 1], timed[i + 1]
        if not is_pause(symbol) or not 0 < end - start <= longest or is_pause(before[0]) or is_pause(after[0]):
            continue
        first = int(round(start / HOP_S))
        level = features.level_db[first:max(first + 1, int(round(end / HOP_S)))]
        if level.size == 0 or np.median(level) < features.speech_level_db - _VOICED_PAUSE_DB:
            continue
        before[2] = after[1] = 0.5 * (start + end)
        bridged.add(i)
    return [(symbol, start, end) for i, (symbol, start, end) in enumerate(timed) if i not in bridged]


def unaligned_voice(features: AudioFeatures, phonemes: Sequence[tuple[str, float, float]], n_frames: int,
                    fps: float) -> np.ndarray:
    """(T,) in [0, 1]: 1 on frames inside a stretch of voice, at least _UNALIGNED_MIN_S long, that no phoneme
    covers (words a recogniser missed, or a transcript left out), easing to 0 over _UNALIGNED_EASE_S."""
    from scipy.ndimage import gaussian_filter1d

    n_frames = max(1, int(n_frames))
    grid = np.arange(features.active.size) * HOP_S
    covered = np.zeros(features.active.size, bool)
    for symbol, start, end in phonemes:
        if end > start and not is_pause(symbol):
            covered[(grid >= start - _UNALIGNED_MARGIN_S) & (grid < end + _UNALIGNED_MARGIN_S)] = True
    missed = _fill_short_runs(features.active & ~covered, True, int(round(_UNALIGNED_MIN_S / HOP_S)))
    ease = gaussian_filter1d(missed.astype(np.float64), _UNALIGNED_EASE_S / HOP_S, mode="constant")
    return np.clip(np.interp(frame_times(n_frames, fps), grid, np.clip(2.0 * ease, 0.0, 1.0),
                             left=0.0, right=0.0), 0.0, 1.0)
