"""The emotion layer: a manifest `emotion` spec → a timeline → sparse ARKit poses blended over any motion source.

Each emotion is a sparse ARKit pose in the manner of FACS action units (happy: AU6 cheek raiser + AU12 lip corner
puller → cheekSquint, mouthSmile; surprised: AU1+2 brow raisers, AU5 upper lid raiser, AU26 jaw drop → browInnerUp,
browOuterUp, eyeWide, a little jawOpen; ...), a head-pose offset and a modulation of the idle rhythms (blinks,
sway, gaze). A timeline of keys moves between them with monotone, C2-smooth transitions.

The pose meets the motion source (speech visemes over idle motion, or a captured video's solve) channel by
channel under CHANNEL_RULES, so that the speech keeps what makes lip closures and vowels: a happy /p/ still
closes the lips. Everything here is deterministic numpy; the idle layer's randomness comes from its own seed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

import numpy as np

from tasks.animate.config import EmotionConfig
from tasks.animate.idle import IdleMood
from tasks.common.arkit import ARKIT_NAMES, INDEX

EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "surprised", "fearful", "disgusted")
_EMOTION_ID = {name: i for i, name in enumerate(EMOTIONS)}

MAX_KEYS = 256
"""A timeline longer than this is refused: no script needs it, and it bounds the work per row."""


class EmotionSpecError(ValueError):
    """An `emotion` value that cannot be parsed; the message is one line meant for the quarantine report."""


@dataclass(frozen=True)
class EmotionKey:
    """One key of an emotion timeline: from `time_s` on, the face moves to `emotion` at `intensity`."""

    emotion: str
    """One of EMOTIONS."""
    intensity: float = 1.0
    """0 = neutral, 1 = the full pose; in between mixes the pose with neutral."""
    time_s: float = 0.0
    """Seconds from the start of the clip at which the change to this key begins."""

    def __str__(self) -> str:
        intensity = "" if self.intensity == 1.0 else f":{self.intensity:g}"
        return f"{self.emotion}{intensity}@{self.time_s:g}"


@dataclass(frozen=True)
class EmotionTimeline:
    """Keys in strictly increasing time. Before the first key the face is neutral, unless that key is at 0."""

    keys: tuple[EmotionKey, ...] = (EmotionKey("neutral"),)

    @property
    def is_neutral(self) -> bool:
        return all(key.emotion == "neutral" or key.intensity == 0.0 for key in self.keys)

    def __str__(self) -> str:
        return ",".join(str(key) for key in self.keys)


NEUTRAL = EmotionTimeline()

_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_KEY = re.compile(rf"^(?P<name>[A-Za-z]+)\s*(?::\s*(?P<intensity>{_NUMBER}))?\s*(?:@\s*(?P<time>{_NUMBER})\s*s?)?$")


def parse_emotion(spec: str | None) -> EmotionTimeline:
    """Parse a manifest `emotion` value: `happy`, `happy:0.6`, or `neutral@0,happy:0.8@2.5,surprised@4` (seconds).

    Empty or None is neutral. Raises EmotionSpecError with a one-line message for anything else that is not
    valid: an unknown emotion, an intensity outside [0, 1], a timeline key without a time, or times that do
    not increase.
    """
    if spec is None or not str(spec).strip():
        return NEUTRAL
    parts = [part.strip() for part in str(spec).split(",")]
    if len(parts) > MAX_KEYS:
        raise EmotionSpecError(f"emotion timeline has {len(parts)} keys; at most {MAX_KEYS}")
    if "" in parts:
        raise EmotionSpecError(f"emotion {str(spec).strip()!r} has an empty key (a stray comma?)")
    keys: list[EmotionKey] = []
    for part in parts:
        match = _KEY.match(part)
        if not match:
            raise EmotionSpecError(f"cannot read emotion {part!r}; write e.g. happy, happy:0.6 or "
                                   "neutral@0,happy@2.5 (intensity 0-1, time in seconds)")
        name = match["name"].lower()
        if name not in _EMOTION_ID:
            raise EmotionSpecError(f"unknown emotion {match['name']!r}; choose one of {', '.join(EMOTIONS)}")
        intensity = 1.0 if match["intensity"] is None else float(match["intensity"])
        if not 0.0 <= intensity <= 1.0:
            raise EmotionSpecError(f"emotion intensity {match['intensity']} in {part!r} must lie between 0 and 1")
        if match["time"] is None and len(parts) > 1:
            raise EmotionSpecError(f"timeline key {part!r} has no time; give every key one, "
                                   "e.g. neutral@0,happy@2.5")
        time_s = 0.0 if match["time"] is None else float(match["time"])
        if keys and time_s <= keys[-1].time_s:
            raise EmotionSpecError(f"emotion timeline times must increase: {part!r} comes at or before "
                                   f"{keys[-1].time_s:g} s")
        keys.append(EmotionKey(name, intensity, time_s))
    return EmotionTimeline(tuple(keys))


def emotion_spec_error(spec: str | None) -> str | None:
    """The one-line parse error of a manifest value, or None when it is valid (for the manifest suite)."""
    try:
        parse_emotion(spec)
    except EmotionSpecError as error:
        return str(error)
    return None


# ---------------------------------------------------------------------------------------------------------
# What each emotion does to the face, the head and the idle rhythms.


def _pair(base: str, amount: float) -> dict[str, float]:
    return {f"{base}Left": amount, f"{base}Right": amount}


@dataclass(frozen=True)
class EmotionProfile:
    """One emotion at full intensity."""

    pose: dict[str, float]
    """Sparse ARKit weights added under CHANNEL_RULES (FACS action units in the comments of EMOTION_PROFILES)."""
    head_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Offset of (pitch, yaw, roll) in degrees; pitch > 0 tips the face down (a droop), as in the head pose."""
    blink_interval: float = 1.0
    """Multiplier on the time between idle blinks (> 1: fewer blinks)."""
    blink_duration: float = 1.0
    """Multiplier on the length of one blink (> 1: slower lids)."""
    sway: float = 1.0
    """Multiplier on the idle head sway (< 1: a stiller head)."""
    gaze_amplitude: float = 1.0
    """Multiplier on how far idle saccades move the eyes."""
    gaze_hold: float = 1.0
    """Multiplier on how long a gaze is held between saccades (< 1: darting eyes)."""
    gaze_vertical: float = 0.0
    """Offset added to the idle gaze's vertical direction (< 0: looking down)."""


EMOTION_PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(pose={}),
    # AU6 cheek raiser, AU12 lip corner puller (with the lower lid pushed up by the cheek).
    "happy": EmotionProfile(
        pose={**_pair("mouthSmile", 0.9), **_pair("cheekSquint", 0.55), **_pair("eyeSquint", 0.25),
              **_pair("mouthDimple", 0.15)},
        head_deg=(-0.5, 0.0, 0.0), sway=1.2),
    # AU1 inner brow raiser, AU4 brow lowerer, AU15 lip corner depressor, AU17 chin raiser; heavy lids.
    "sad": EmotionProfile(
        pose={"browInnerUp": 0.7, **_pair("browDown", 0.15), **_pair("mouthFrown", 0.55), "mouthShrugLower": 0.25,
              **_pair("eyeBlink", 0.12)},
        head_deg=(3.0, 0.0, 0.0), blink_interval=1.3, blink_duration=1.5, sway=0.6, gaze_amplitude=0.6,
        gaze_hold=1.5, gaze_vertical=-0.12),
    # AU4 brow lowerer, AU5+AU7 glaring lids, AU9 a little nose wrinkle, AU23/24 lips tightened and pressed.
    "angry": EmotionProfile(
        pose={**_pair("browDown", 0.7), **_pair("noseSneer", 0.25), **_pair("mouthPress", 0.45),
              **_pair("eyeSquint", 0.35), **_pair("eyeWide", 0.1)},
        head_deg=(1.5, 0.0, 0.0), blink_interval=1.6, sway=0.35, gaze_amplitude=0.4, gaze_hold=2.0),
    # AU1+2 inner and outer brow raisers, AU5 upper lid raiser, AU26 jaw drop.
    "surprised": EmotionProfile(
        pose={"browInnerUp": 0.75, **_pair("browOuterUp", 0.8), **_pair("eyeWide", 0.6), "jawOpen": 0.12},
        head_deg=(-1.5, 0.0, 0.0), blink_interval=1.8, sway=0.7, gaze_amplitude=0.7, gaze_hold=1.5),
    # AU1+2+4 raised and drawn-together brows, AU5 upper lid raiser, AU20 lip stretcher, AU26 a small jaw drop.
    "fearful": EmotionProfile(
        pose={"browInnerUp": 0.7, **_pair("browOuterUp", 0.35), **_pair("browDown", 0.25), **_pair("eyeWide", 0.55),
              **_pair("mouthStretch", 0.45), "jawOpen": 0.06},
        head_deg=(-0.5, 0.0, 0.0), blink_interval=0.7, sway=0.8, gaze_amplitude=1.4, gaze_hold=0.45),
    # AU9 nose wrinkler, AU10 upper lip raiser, AU4 brow lowerer, AU6/7 narrowed eyes, AU15 a little.
    "disgusted": EmotionProfile(
        pose={**_pair("noseSneer", 0.6), **_pair("mouthUpperUp", 0.35), **_pair("browDown", 0.4),
              **_pair("cheekSquint", 0.35), **_pair("eyeSquint", 0.25), **_pair("mouthFrown", 0.2)},
        head_deg=(-1.0, 1.5, 0.0), sway=0.8, gaze_amplitude=0.8),
}
assert tuple(EMOTION_PROFILES) == EMOTIONS


# ---------------------------------------------------------------------------------------------------------
# Channel ownership: who decides each ARKit channel when an emotion meets speech (or a captured performance).


class Rule(Enum):
    """Who decides a channel when an emotion meets the motion source; RULE_BLENDS gives each rule's formula."""

    SPEECH = "speech"
    SPEECH_FLOOR = "speech, emotion as a floor"
    SHARED = "shared"
    EMOTION = "emotion"
    SOURCE = "idle or capture"


# s: the motion source's value, e: the emotion pose's, c: the lip seal in [0, 1], a: closure_attenuation.
RULE_BLENDS: dict[Rule, str] = {
    Rule.SPEECH: "s",
    Rule.SPEECH_FLOOR: "max(s, e·(1−c))",
    Rule.SHARED: "min(1, s + e·(1−a·c))",
    Rule.EMOTION: "min(1, s + e)",
    Rule.SOURCE: "s",
}


def _names(*bases: str) -> tuple[str, ...]:
    names: list[str] = []
    for base in bases:
        names.extend([base] if base in INDEX else [f"{base}Left", f"{base}Right"])
    return tuple(names)


# The one table of ownership rules: (rule, channels, why). The README's table is rendered from it.
OWNERSHIP_TABLE: tuple[tuple[Rule, tuple[str, ...], str], ...] = (
    (Rule.SPEECH, _names("mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower", "mouthRollUpper", "mouthLeft",
                         "mouthRight", "jawForward", "jawLeft", "jawRight", "tongueOut", "cheekPuff"),
     "they make lip closures, rounded vowels and the tongue; any emotion offset would blur a /p/ or an /u/"),
    (Rule.SPEECH_FLOOR, _names("jawOpen", "mouthPress", "mouthUpperUp", "mouthLowerDown"),
     "vowels open the jaw and lips as far as the speech says; a surprised jaw drop or a pressed angry mouth "
     "shows between sounds but is lifted whenever the lips seal"),
    (Rule.SHARED, _names("mouthSmile", "mouthFrown", "mouthStretch", "mouthDimple", "mouthShrugLower",
                         "mouthShrugUpper"),
     "the lip corners carry both the mood and the spread of /i/ or /s/; while the lips seal the mood is "
     "attenuated so the corners do not pull them apart"),
    (Rule.EMOTION, _names("browDown", "browInnerUp", "browOuterUp", "cheekSquint", "noseSneer", "eyeSquint",
                          "eyeWide", "eyeBlink"),
     "brows, cheeks, nose and lids carry the mood; speech brow accents, blinks and a captured performance add on "
     "top, and a blink still closes the lids"),
    (Rule.SOURCE, _names("eyeLookDown", "eyeLookIn", "eyeLookOut", "eyeLookUp"),
     "gaze belongs to the idle layer or the captured video; an emotion changes how the idle gaze moves"),
)

CHANNEL_RULES: dict[str, Rule] = {name: rule for rule, names, _ in OWNERSHIP_TABLE for name in names}
assert sorted(CHANNEL_RULES) == sorted(ARKIT_NAMES) and len(CHANNEL_RULES) == sum(len(n) for _, n, _ in OWNERSHIP_TABLE)
for _emotion, _profile in EMOTION_PROFILES.items():
    for _name in _profile.pose:
        assert CHANNEL_RULES[_name] not in (Rule.SPEECH, Rule.SOURCE), f"{_emotion} sets {_name}, which it may not"

_RULE_INDICES = {rule: np.array([INDEX[n] for n, r in CHANNEL_RULES.items() if r is rule], np.int64) for rule in Rule}


def ownership_table_markdown() -> str:
    """The ownership rules as the Markdown table the README shows (kept in step by a unit test)."""
    lines = ["| owner | channels | blend | why |", "|---|---|---|---|"]
    for rule, names, why in OWNERSHIP_TABLE:
        lines.append(f"| {rule.value} | {', '.join(names)} | {RULE_BLENDS[rule]} | {why} |")
    return "\n".join(lines)


POSE_MATRIX = np.zeros((len(EMOTIONS), len(ARKIT_NAMES)), np.float64)
for _row, _name in enumerate(EMOTIONS):
    for _channel, _value in EMOTION_PROFILES[_name].pose.items():
        POSE_MATRIX[_row, INDEX[_channel]] = _value
HEAD_MATRIX_DEG = np.array([EMOTION_PROFILES[name].head_deg for name in EMOTIONS], np.float64)  # (E, 3)
_IDLE_FIELDS = ("blink_interval", "blink_duration", "sway", "gaze_amplitude", "gaze_hold", "gaze_vertical")
IDLE_MATRIX = np.array([[getattr(EMOTION_PROFILES[name], f) for f in _IDLE_FIELDS] for name in EMOTIONS])  # (E, 6)


# ---------------------------------------------------------------------------------------------------------
# Timeline → per-frame emotion mixture.


def smootherstep(x: np.ndarray) -> np.ndarray:
    """6x⁵ − 15x⁴ + 10x³ on [0, 1]: monotone, with zero first and second derivatives at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6.0 * x - 15.0) + 10.0)


def _key_mixture(key: EmotionKey) -> np.ndarray:
    mixture = np.zeros(len(EMOTIONS))
    mixture[_EMOTION_ID["neutral"]] += 1.0 - key.intensity
    mixture[_EMOTION_ID[key.emotion]] += key.intensity
    return mixture


def emotion_mixture(timeline: EmotionTimeline, times: np.ndarray, transition_s: float) -> np.ndarray:
    """(T, E) share of each emotion at each time; rows sum to 1.

    The change to a key starts at the key's time and takes transition_s, or less when the next key comes
    sooner, so each transition ends before the next begins and every channel moves monotonically between keys.
    """
    times = np.asarray(times, np.float64).reshape(-1)
    keys = timeline.keys
    neutral = _key_mixture(EmotionKey("neutral"))
    start = _key_mixture(keys[0]) if keys[0].time_s <= 0.0 else neutral
    mixture = np.tile(start, (times.size, 1))
    previous = start
    for index, key in enumerate(keys):
        target = _key_mixture(key)
        following = keys[index + 1].time_s if index + 1 < len(keys) else math.inf
        duration = min(max(transition_s, 0.0), following - key.time_s)
        if duration > 0.0:
            ease = smootherstep((times - key.time_s) / duration)
        else:
            ease = (times >= key.time_s).astype(np.float64)
        moving = times >= key.time_s
        mixture[moving] = previous + (target - previous) * ease[moving, None]
        previous = target
    return mixture


# ---------------------------------------------------------------------------------------------------------
# Blending.

_PRESS_AT_SEAL = 0.35
"""visemes.apply_lip_closure presses the lips at least this much on a full seal."""
_JAW_EPS = 1e-3


def lip_seal(weights: np.ndarray) -> np.ndarray:
    """(T,) how sealed the lips are in [0, 1], read from the source's own weights.

    The viseme layer seals a closure with mouthClose = seal × jawOpen and mouthPress ≥ 0.35 × seal; the larger
    of the two readings is taken, so a closure shows whether or not the jaw is open.
    """
    w = np.asarray(weights, np.float64)
    jaw = w[:, INDEX["jawOpen"]]
    by_close = np.where(jaw > _JAW_EPS, w[:, INDEX["mouthClose"]] / np.maximum(jaw, _JAW_EPS), 0.0)
    press = 0.5 * (w[:, INDEX["mouthPressLeft"]] + w[:, INDEX["mouthPressRight"]])
    return np.clip(np.maximum(by_close, press / _PRESS_AT_SEAL), 0.0, 1.0)


def blend_channels(source: np.ndarray, emotion: np.ndarray, seal: np.ndarray, config: EmotionConfig) -> np.ndarray:
    """(T, 52) weights in [0, 1]: the source's weights and an emotion pose per frame combined under CHANNEL_RULES."""
    s = np.asarray(source, np.float64)
    e = np.clip(np.asarray(emotion, np.float64), 0.0, 1.0)
    c = np.clip(np.asarray(seal, np.float64).reshape(-1, 1), 0.0, 1.0)
    out = s.copy()
    floor = _RULE_INDICES[Rule.SPEECH_FLOOR]
    out[:, floor] = np.maximum(s[:, floor], e[:, floor] * (1.0 - c))
    shared = _RULE_INDICES[Rule.SHARED]
    out[:, shared] = s[:, shared] + e[:, shared] * (1.0 - config.closure_attenuation * c)
    owned = _RULE_INDICES[Rule.EMOTION]
    out[:, owned] = s[:, owned] + e[:, owned]
    return np.clip(out, 0.0, 1.0)


def idle_mood(timeline: EmotionTimeline, n_frames: int, fps: float,
              config: EmotionConfig = EmotionConfig()) -> IdleMood:
    """How the emotion timeline modulates the idle layer, per frame (config.idle_gain 0 leaves it unchanged)."""
    times = np.arange(max(1, int(n_frames)), dtype=np.float64) / fps
    values = emotion_mixture(timeline, times, config.transition_s) @ IDLE_MATRIX  # (T, 6)
    identity = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    values = identity + config.idle_gain * (values - identity)
    return IdleMood(**{name: values[:, i] for i, name in enumerate(_IDLE_FIELDS)})


def apply_emotion(weights: np.ndarray, head_pose: np.ndarray, timeline: EmotionTimeline | str | None, fps: float,
                  config: EmotionConfig = EmotionConfig(),
                  seal: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Layer an emotion timeline over finished animation arrays from any motion source.

    weights (T, 52) and head_pose (T, 6) as the animate stage or the capture solve writes them; timeline an
    EmotionTimeline or a manifest spec string; seal (T,) in [0, 1] where the caller knows when the lips are
    sealed (default: read from the weights, see lip_seal). Returns new float32 arrays; a neutral timeline
    returns the inputs' values unchanged.
    """
    if not isinstance(timeline, EmotionTimeline):
        timeline = parse_emotion(timeline)
    weights = np.asarray(weights, np.float32)
    head_pose = np.asarray(head_pose, np.float32)
    if weights.ndim != 2 or weights.shape[1] != len(ARKIT_NAMES):
        raise ValueError(f"weights must be (T, {len(ARKIT_NAMES)}), got {weights.shape}")
    if head_pose.shape != (weights.shape[0], 6):
        raise ValueError(f"head_pose must be ({weights.shape[0]}, 6), got {head_pose.shape}")
    if timeline.is_neutral:
        return weights.copy(), head_pose.copy()
    n_frames = weights.shape[0]
    times = np.arange(n_frames, dtype=np.float64) / fps
    mixture = emotion_mixture(timeline, times, config.transition_s)
    pose = config.gain * (mixture @ POSE_MATRIX)
    if seal is None:
        seal = lip_seal(weights)
    elif np.asarray(seal).shape != (n_frames,):
        raise ValueError(f"seal must be ({n_frames},), got {np.asarray(seal).shape}")
    blended = blend_channels(weights, pose, seal, config)
    posed = head_pose.astype(np.float64)
    posed[:, :3] += np.deg2rad(config.head_gain * (mixture @ HEAD_MATRIX_DEG))
    return blended.astype(np.float32), posed.astype(np.float32)
