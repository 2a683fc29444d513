"""Phoneme → viseme → ARKit mouth weights, with coarticulation smoothing and guaranteed lip closures.

espeak-ng phoneme mnemonics (as reported by its phoneme events, any language) are mapped to the 15 standard
visemes (sil, PP, FF, TH, DD, kk, CH, SS, nn, RR, aa, E, ih, oh, ou). Each viseme has a target ARKit pose.
Targets are laid out on a fine time grid, blended with a Gaussian (coarticulation), shifted earlier
(anticipation) and sampled at the frame times. Bilabials (p, b, m) additionally drive a narrowly smoothed
closure track so the lips really meet even between wide-open vowels.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from tasks.animate.config import AnimationConfig
from tasks.common.arkit import ARKIT_NAMES, INDEX

VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")

# Channels that belong to the mouth and jaw; speech owns them, and they are zero in silence.
MOUTH_NAMES: tuple[str, ...] = tuple(n for n in ARKIT_NAMES if n.startswith(("jaw", "mouth")) or n in ("tongueOut", "cheekPuff"))
MOUTH_INDICES = np.array([INDEX[n] for n in MOUTH_NAMES], dtype=np.int64)

# Viseme used for a phoneme symbol the table does not know: a neutral, half-open vowel-like shape.
UNKNOWN_VISEME = "E"

# Sampling step (s) of the fine grid on which phoneme targets are laid out and smoothed.
FINE_STEP_S = 0.005
# Gaussian kernels are cut at this many sigmas, so frames far from speech stay exactly zero.
KERNEL_TRUNCATE = 3.0


def _pair(base: str, amount: float) -> dict[str, float]:
    return {f"{base}Left": amount, f"{base}Right": amount}


# Target ARKit pose of each viseme (weights not listed are 0).
VISEME_POSES: dict[str, dict[str, float]] = {
    "sil": {},
    # Lips pressed together, jaw nearly shut; the closure track adds mouthClose against any residual jawOpen.
    "PP": {"jawOpen": 0.04, **_pair("mouthPress", 0.35), "mouthRollUpper": 0.05},
    # Lower lip tucked under the upper teeth.
    "FF": {"jawOpen": 0.08, "mouthRollLower": 0.45, **_pair("mouthUpperUp", 0.15), "mouthShrugUpper": 0.1},
    # Tongue between the teeth.
    "TH": {"jawOpen": 0.15, "tongueOut": 0.25, **_pair("mouthLowerDown", 0.1)},
    "DD": {"jawOpen": 0.18, **_pair("mouthLowerDown", 0.1), **_pair("mouthStretch", 0.08)},
    "kk": {"jawOpen": 0.22, **_pair("mouthStretch", 0.1), **_pair("mouthLowerDown", 0.05)},
    # Lips protruded and slightly open, teeth showing.
    "CH": {"jawOpen": 0.12, "mouthFunnel": 0.35, "mouthPucker": 0.2, **_pair("mouthUpperUp", 0.15),
           **_pair("mouthLowerDown", 0.15)},
    # Teeth nearly together, lips spread.
    "SS": {"jawOpen": 0.06, **_pair("mouthStretch", 0.2), **_pair("mouthSmile", 0.12), **_pair("mouthUpperUp", 0.1),
           **_pair("mouthLowerDown", 0.1)},
    "nn": {"jawOpen": 0.14, **_pair("mouthLowerDown", 0.06), **_pair("mouthStretch", 0.05)},
    "RR": {"jawOpen": 0.15, "mouthFunnel": 0.2, "mouthPucker": 0.2},
    "aa": {"jawOpen": 0.65, **_pair("mouthLowerDown", 0.25), **_pair("mouthUpperUp", 0.1)},
    "E": {"jawOpen": 0.35, **_pair("mouthStretch", 0.2), **_pair("mouthSmile", 0.12), **_pair("mouthLowerDown", 0.15)},
    "ih": {"jawOpen": 0.2, **_pair("mouthSmile", 0.3), **_pair("mouthStretch", 0.25)},
    "oh": {"jawOpen": 0.45, "mouthFunnel": 0.45, "mouthPucker": 0.2},
    "ou": {"jawOpen": 0.18, "mouthPucker": 0.65, "mouthFunnel": 0.35},
}


def _pose_vector(pose: dict[str, float]) -> np.ndarray:
    vector = np.zeros(len(ARKIT_NAMES), np.float64)
    for name, value in pose.items():
        vector[INDEX[name]] = value
    return vector


VISEME_MATRIX = np.stack([_pose_vector(VISEME_POSES[v]) for v in VISEMES])  # (15, 52)
_VISEME_ID = {v: i for i, v in enumerate(VISEMES)}

# espeak-ng mnemonics (after stripping modifiers, see normalise_symbol) → viseme.
PHONEME_VISEMES: dict[str, str] = {
    # bilabials
    "p": "PP", "b": "PP", "m": "PP",
    # labiodentals and bilabial fricatives
    "f": "FF", "v": "FF", "F": "FF", "B": "FF",
    # dental fricatives
    "T": "TH", "D": "TH",
    # alveolar stops and flaps
    "t": "DD", "d": "DD",
    # velar, uvular, palatal and glottal consonants
    "k": "kk", "g": "kk", "x": "kk", "G": "kk", "X": "kk", "q": "kk", "c": "kk", "C": "kk", "h": "kk",
    # postalveolars and affricates
    "S": "CH", "Z": "CH", "tS": "CH", "dZ": "CH", "tC": "CH", "dz:": "CH",
    # sibilants
    "s": "SS", "z": "SS", "ts": "SS", "dz": "SS",
    # nasals and laterals
    "n": "nn", "N": "nn", "J": "nn", "l": "nn", "L": "nn",
    # rhotics
    "r": "RR", "R": "RR", "3:": "RR",
    # glides
    "j": "ih", "w": "ou",
    # open vowels
    "a": "aa", "a:": "aa", "A": "aa", "A:": "aa", "V": "aa", "0": "aa", "aa": "aa", "A@": "aa",
    # mid front and central vowels
    "e": "E", "e:": "E", "E": "E", "E:": "E", "@": "E", "3": "E", "@:": "E",
    # close front vowels
    "i": "ih", "i:": "ih", "I": "ih", "I:": "ih",
    # mid back and rounded front-mid vowels
    "o": "oh", "o:": "oh", "O": "oh", "O:": "oh", "Q": "oh", "Y": "oh", "Y:": "oh", "W": "oh", "2": "oh",
    "8": "oh", "O@": "oh", "o@": "oh",
    # close rounded vowels
    "u": "ou", "u:": "ou", "U": "ou", "U:": "ou", "y": "ou", "y:": "ou",
}

# Diphthongs: first and second half visemes.
DIPHTHONGS: dict[str, tuple[str, str]] = {
    "aI": ("aa", "ih"), "aU": ("aa", "ou"), "eI": ("E", "ih"), "oU": ("oh", "ou"), "OI": ("oh", "ih"),
    "e@": ("E", "E"), "i@": ("ih", "E"), "U@": ("ou", "E"), "u@": ("ou", "E"), "ju": ("ih", "ou"),
    "aI@": ("aa", "E"), "aU@": ("aa", "E"), "@U": ("E", "ou"), "OU": ("oh", "ou"), "ai": ("aa", "ih"),
    "au": ("aa", "ou"), "ei": ("E", "ih"), "oi": ("oh", "ih"), "Oy": ("oh", "ih"),
}

# Stress, length-neutral modifiers and language-specific markers espeak attaches to a base symbol.
_MODIFIERS = re.compile(r"[',%=;~#\-\^!*?|]+")


def normalise_symbol(symbol: str) -> str:
    """Strip stress marks, nasalisation/palatalisation markers and variant digits from an espeak mnemonic."""
    stripped = _MODIFIERS.sub("", symbol.strip())
    # Trailing digits mark language-specific variants (z2, i@3) of the same sound.
    return stripped.rstrip("0123456789") if len(stripped) > 1 else stripped


def is_pause(symbol: str) -> bool:
    """espeak pause mnemonics start with "_" (_, _:, _!, _|)."""
    return symbol.strip().startswith("_")


def phoneme_visemes(symbol: str) -> tuple[str, ...] | None:
    """Viseme(s) of one espeak mnemonic: one, or two for a diphthong; ("sil",) for a pause.

    Returns None for a bare modifier (no sound of its own: it continues the previous phoneme).
    """
    if is_pause(symbol):
        return ("sil",)
    base = normalise_symbol(symbol)
    if not base:
        return None
    for candidate in (base, base.replace(":", "")):
        if candidate in DIPHTHONGS:
            return DIPHTHONGS[candidate]
        if candidate in PHONEME_VISEMES:
            return (PHONEME_VISEMES[candidate],)
    plain = base.replace(":", "")
    # An unlisted two-part symbol such as a rare diphthong: use its known parts.
    if len(plain) >= 2 and plain[0] in PHONEME_VISEMES and plain[1:] in PHONEME_VISEMES:
        return (PHONEME_VISEMES[plain[0]], PHONEME_VISEMES[plain[1:]])
    return (UNKNOWN_VISEME,)


def viseme_track(phonemes: Sequence[tuple[str, float, float]], n_samples: int, step: float) -> np.ndarray:
    """Viseme index per fine-grid sample (sample k at time k*step); silence where no phoneme covers it."""
    track = np.full(n_samples, _VISEME_ID["sil"], dtype=np.int64)
    previous: tuple[str, ...] = ("sil",)
    for symbol, start, end in phonemes:
        visemes = phoneme_visemes(symbol)
        if visemes is None:
            visemes = previous[-1:]
        previous = visemes
        if end <= start:
            continue
        # Diphthongs split their interval evenly between their two halves.
        bounds = np.linspace(start, end, len(visemes) + 1)
        for viseme, lo, hi in zip(visemes, bounds[:-1], bounds[1:]):
            first = max(0, int(np.ceil(lo / step - 1e-9)))
            last = min(n_samples, int(np.ceil(hi / step - 1e-9)))
            if last <= first and 0 <= int(round(lo / step)) < n_samples:
                # A phoneme shorter than the grid step still claims its nearest sample.
                first, last = int(round(lo / step)), int(round(lo / step)) + 1
            track[first:last] = _VISEME_ID[viseme]
    return track


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """Time (s) each frame shows: frame i at i / fps."""
    return np.arange(n_frames, dtype=np.float64) / fps


def coarticulate(targets: np.ndarray, closure: np.ndarray, step: float, n_frames: int, fps: float,
                 config: AnimationConfig, seal_times: np.ndarray | None = None, seal_gain: float = 2.0) -> np.ndarray:
    """Blend per-sample target poses over time and sample them at the frame times.

    targets: (N, 52) poses on a grid of `step` seconds; closure: (N,) in [0, 1], 1 where the lips must be sealed.
    seal_times: the midpoints (s) of the closures, whose frames are sealed whole however brief the closure
    (default: the midpoints of the runs where closure >= 0.5).
    seal_gain: factor on the smoothed closure track. 2 lets a closure about two narrow sigmas long, or a partial
    one, reach a full seal, and seals a closure's edges whole; 1 half-seals a frame shown at a closure's edge.
    The result (T, 52) is float64, mouth weights scaled by the viseme gain, not yet clipped.
    """
    from scipy.ndimage import gaussian_filter1d

    sigma = max(config.coarticulation_sigma_s / step, 1e-6)
    closure_sigma = max(config.closure_sigma_s / step, 1e-6)
    seal = gaussian_filter1d(closure.astype(np.float64), closure_sigma, mode="constant", truncate=KERNEL_TRUNCATE)
    seal = np.clip(seal_gain * seal, 0.0, 1.0)

    grid = np.arange(targets.shape[0]) * step
    # Anticipation: the frame at time t shows the shape due a little later.
    times = frame_times(n_frames, fps) + config.anticipation_s
    frames = np.zeros((n_frames, targets.shape[1]), np.float64)
    # Channel by channel, and only those some target sets: a long clip's fine grid is 100,000s of samples.
    for channel in np.flatnonzero((targets.max(axis=0) > 0) | (targets.min(axis=0) < 0)):
        smooth = gaussian_filter1d(np.asarray(targets[:, channel], np.float64), sigma, mode="constant",
                                   truncate=KERNEL_TRUNCATE)
        frames[:, channel] = np.interp(times, grid, smooth, left=0.0, right=0.0)
    # The seal is sampled at the middle of each frame's time on screen, without anticipation (the lips part at
    # the burst), so the loud vowel frames next to a closure stay open; and the frame on screen at a closure's
    # midpoint is sealed whole, so a brief p/b/m is never skipped.
    sealed = np.interp(frame_times(n_frames, fps) + 0.5 / fps, grid, seal, left=0.0, right=0.0)
    if seal_times is None:
        seal_times = closure_midpoints(closure, step)
    on_screen = np.floor(np.asarray(seal_times, np.float64) * fps + 1e-9).astype(np.int64)
    sealed[on_screen[(on_screen >= 0) & (on_screen < n_frames)]] = 1.0

    frames[:, MOUTH_INDICES] *= config.viseme_gain
    return apply_lip_closure(frames, sealed)


def closure_midpoints(closure: np.ndarray, step: float) -> np.ndarray:
    """Midpoints (s) of the runs of a closure track (samples `step` apart) at or above one half."""
    edges = np.diff(np.concatenate([[0], (np.asarray(closure) >= 0.5).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return 0.5 * (starts + ends - 1) * step


def apply_lip_closure(frames: np.ndarray, sealed: np.ndarray) -> np.ndarray:
    """Seal the lips by `sealed` (T,) in [0, 1]: mouthClose cancels jawOpen and lip-opening shapes fade out."""
    out = frames.copy()
    sealed = np.clip(sealed, 0.0, 1.0)
    jaw = out[:, INDEX["jawOpen"]] * (1.0 - 0.5 * sealed)
    out[:, INDEX["jawOpen"]] = jaw
    out[:, INDEX["mouthClose"]] = np.maximum(out[:, INDEX["mouthClose"]], sealed * jaw)
    for name in ("mouthFunnel", "mouthPucker", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
                 "mouthUpperUpRight", "tongueOut", "mouthRollLower"):
        out[:, INDEX[name]] *= 1.0 - sealed
    for name in ("mouthPressLeft", "mouthPressRight"):
        out[:, INDEX[name]] = np.maximum(out[:, INDEX[name]], 0.35 * sealed)
    return out


def weights_from_phonemes(phonemes: Sequence[tuple[str, float, float]], n_frames: int, fps: float,
                          config: AnimationConfig) -> np.ndarray:
    """(T, 52) float32 ARKit weights in [0, 1] for timed phonemes (symbol, start_s, end_s) in espeak mnemonics.

    Only mouth/jaw channels are set; they are exactly 0 where no speech is near (silence, pauses "_").
    """
    n_frames = max(1, int(n_frames))
    horizon = n_frames / fps + config.anticipation_s + 1.0
    if phonemes:
        horizon = max(horizon, max(end for _, _, end in phonemes) + 0.1)
    n_samples = int(np.ceil(horizon / FINE_STEP_S)) + 1
    track = viseme_track(phonemes, n_samples, FINE_STEP_S)
    targets = VISEME_MATRIX[track]
    closure = (track == _VISEME_ID["PP"]).astype(np.float64)
    # Each p/b/m's own midpoint: adjacent ones (/m b/ in "embassy") make one run of the track.
    midpoints = [0.5 * (start + end) for symbol, start, end in phonemes
                 if end > start and phoneme_visemes(symbol) == ("PP",)]
    # Timed phonemes give the closures' true bounds, and each one's midpoint frame is sealed whole, so the seal is
    # not doubled: a frame shown across a closure's onset or release, when the lips meet or part, is half sealed.
    frames = coarticulate(targets, closure, FINE_STEP_S, n_frames, fps, config, seal_times=np.array(midpoints),
                          seal_gain=1.0)
    return np.clip(frames, 0.0, 1.0).astype(np.float32)


def mouth_open_series(weights: np.ndarray) -> np.ndarray:
    """(T,) how far the lips are apart: jawOpen not cancelled by mouthClose, plus the lip-parting shapes."""
    w = np.asarray(weights, dtype=np.float64)
    jaw_gap = np.clip(w[:, INDEX["jawOpen"]] - w[:, INDEX["mouthClose"]], 0.0, None)
    lips = 0.5 * (w[:, INDEX["mouthLowerDownLeft"]] + w[:, INDEX["mouthLowerDownRight"]]) * 0.3 \
        + 0.5 * (w[:, INDEX["mouthUpperUpLeft"]] + w[:, INDEX["mouthUpperUpRight"]]) * 0.2
    return jaw_gap + lips
