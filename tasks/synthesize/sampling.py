"""What each sample shows, drawn from one seeded generator per identity: the expression (sparse,
correlated ARKit weights), the head pose, the camera, the area lights and the sky.

Each identity's draws come from `default_rng([seed, identity])`, so a data set is the same whatever
its shard size, and a resumed run draws what the killed one drew."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tasks.animate.emotion import EMOTION_PROFILES, EMOTIONS
from tasks.common.arkit import ARKIT_NAMES, INDEX
from tasks.synthesize.config import SynthesisConfig

GAZE_CHANNELS = frozenset(name for name in ARKIT_NAMES if name.startswith("eyeLook"))
"""Set together by the gaze direction, never at random one by one: both eyes look one way."""

LIGHT_FIELDS = ("on", "azimuth_deg", "elevation_deg", "power", "size", "red", "green", "blue")
CAMERA_FIELDS = ("lens_mm", "face_fill", "azimuth_deg", "elevation_deg", "target_dx", "target_dy")
SKY_FIELDS = ("strength", "sun_elevation_deg", "sun_rotation_deg")
_WARM, _COOL = np.array([1.0, 0.82, 0.66]), np.array([0.78, 0.88, 1.0])


@dataclass(frozen=True)
class SceneDraws:
    """One identity's samples, N-first."""

    weights: np.ndarray
    """(N, 52) float32 ARKit weights in [0, 1]."""
    head_pose: np.ndarray
    """(N, 6) float32 (pitch, yaw, roll) in radians, then a translation (zero)."""
    emotion: np.ndarray
    """(N,) int8: index into EMOTIONS of the emotion the expression started from, -1 for none."""
    camera: np.ndarray
    """(N, 6) float32, CAMERA_FIELDS: angles in degrees off the face's frontal axis, the look-at
    offset in face widths."""
    lights: np.ndarray
    """(N, L, 8) float32, LIGHT_FIELDS; `on` is 0 for the unused slots."""
    sky: np.ndarray
    """(N, 3) float32, SKY_FIELDS."""
    background: np.ndarray
    """(N,) int32: index into the background images, -1 for the sky."""

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "head_pose": self.head_pose, "emotion": self.emotion,
                "camera": self.camera, "lights": self.lights, "sky": self.sky, "background": self.background}


def mirror_channel(name: str) -> str | None:
    """The other side's channel of a Left/Right pair, else None."""
    for side, other in (("Left", "Right"), ("Right", "Left")):
        if name.endswith(side):
            return name[: -len(side)] + other
    return None


def draw_expression(rng: np.random.Generator, config: SynthesisConfig) -> tuple[np.ndarray, int]:
    """(52,) weights and the emotion index (-1 for none): an emotion's sparse pose at a random
    intensity, plus a Poisson number of random channels whose Left/Right partners mostly follow,
    a shared gaze, a lower lip that follows the jaw, and no lid both closed and wide."""
    weights = np.zeros(len(ARKIT_NAMES))
    emotion = -1
    if rng.random() < config.emotion_share:
        emotion = int(rng.integers(1, len(EMOTIONS)))  # 0 is neutral: the random channels cover it
        intensity = rng.uniform(0.3, 1.0)
        for name, amount in EMOTION_PROFILES[EMOTIONS[emotion]].pose.items():
            weights[INDEX[name]] = amount * intensity
    free = [i for i, name in enumerate(ARKIT_NAMES) if name not in GAZE_CHANNELS]
    count = min(int(rng.poisson(config.extra_channels)), len(free))
    for channel in rng.choice(free, size=count, replace=False):
        value = rng.beta(1.5, 3.0)
        weights[channel] = max(weights[channel], value)
        partner = mirror_channel(ARKIT_NAMES[channel])
        if partner is not None and rng.random() < config.pair_coupling:
            weights[INDEX[partner]] = max(weights[INDEX[partner]], value * rng.uniform(0.8, 1.0))
    horizontal, vertical = np.clip(rng.normal(0.0, 0.3, size=2), -0.8, 0.8)
    if horizontal > 0:  # toward the subject's left: the left eye looks out, the right eye in
        weights[INDEX["eyeLookOutLeft"]] = weights[INDEX["eyeLookInRight"]] = horizontal
    else:
        weights[INDEX["eyeLookInLeft"]] = weights[INDEX["eyeLookOutRight"]] = -horizontal
    for side in ("Left", "Right"):
        weights[INDEX["eyeLookUp" + side] if vertical > 0 else INDEX["eyeLookDown" + side]] = abs(vertical)
        blink, wide = INDEX["eyeBlink" + side], INDEX["eyeWide" + side]
        weights[wide if weights[blink] >= weights[wide] else blink] = 0.0
        lower = INDEX["mouthLowerDown" + side]
        weights[lower] = max(weights[lower], 0.5 * weights[INDEX["jawOpen"]])
    return np.clip(weights, 0.0, 1.0), emotion


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def draw_scenes(seed: int, identity: int, n_samples: int, config: SynthesisConfig, n_backgrounds: int = 0) -> SceneDraws:
    """Everything `n_samples` renders of one identity show, from its own generator. Backgrounds
    (one of `n_backgrounds` images, or the sky) come from a second one, so adding a folder of them
    changes nothing else."""
    rng = np.random.default_rng([seed, identity])
    backgrounds = np.random.default_rng([seed, identity, 1])
    background = (backgrounds.integers(0, n_backgrounds, size=n_samples) if n_backgrounds
                  else np.full(n_samples, -1)).astype(np.int32)
    max_lights = config.area_lights[1]
    weights = np.zeros((n_samples, len(ARKIT_NAMES)), dtype=np.float32)
    head_pose = np.zeros((n_samples, 6), dtype=np.float32)
    emotion = np.full(n_samples, -1, dtype=np.int8)
    camera = np.zeros((n_samples, len(CAMERA_FIELDS)), dtype=np.float32)
    lights = np.zeros((n_samples, max_lights, len(LIGHT_FIELDS)), dtype=np.float32)
    sky = np.zeros((n_samples, len(SKY_FIELDS)), dtype=np.float32)
    for k in range(n_samples):
        weights[k], emotion[k] = draw_expression(rng, config)
        head_pose[k, :3] = np.radians([_uniform(rng, config.pitch), _uniform(rng, config.yaw),
                                       _uniform(rng, config.roll)])
        orbit, direction = config.camera_orbit * math.sqrt(rng.random()), rng.uniform(0.0, 2 * math.pi)
        camera[k] = (_uniform(rng, config.lens_mm), _uniform(rng, config.face_fill),
                     orbit * math.cos(direction), orbit * math.sin(direction),
                     *rng.uniform(-config.target_jitter, config.target_jitter, size=2))
        for slot in range(int(rng.integers(config.area_lights[0], max_lights + 1))):
            tint = _WARM + rng.random() * (_COOL - _WARM)
            lights[k, slot] = (1.0, rng.uniform(-80.0, 80.0), rng.uniform(-20.0, 60.0),
                               _uniform(rng, config.light_power), rng.uniform(0.1, 0.6), *tint)
        sky[k] = (_uniform(rng, config.sky_strength), rng.uniform(5.0, 70.0), rng.uniform(0.0, 360.0))
    return SceneDraws(weights=weights, head_pose=head_pose, emotion=emotion, camera=camera, lights=lights, sky=sky,
                      background=background)
