"""Settings of the animation stage: frame rate, lip-sync smoothing, audio voice activity, idle motion and emotion."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EmotionConfig:
    """How a row's `emotion` timeline is layered over the motion (see tasks/animate/emotion.py)."""

    transition_s: float = 0.8
    """Seconds the face takes to move from one timeline key to the next (less when the next key comes sooner)."""

    gain: float = 1.0
    """Multiplier on every emotion pose weight (expression strength); 0 turns the face layer off."""

    closure_attenuation: float = 0.4
    """Share of the emotion taken off the shared mouth channels (smile, frown, stretch) while the lips seal."""

    head_gain: float = 1.0
    """Multiplier on each emotion's head offset (a sad droop, a surprised lift); 0 keeps the head pose."""

    idle_gain: float = 1.0
    """How far the emotion changes the idle rhythms (blink rate and length, sway, gaze); 0 leaves them as they are."""


@dataclass(frozen=True)
class AnimationConfig:
    """Parameters turning speech (phonemes or audio) and a seed into ARKit weights and head pose per frame."""

    fps: float = 25.0
    """Frames per second of the animation; T = max(1, round(duration_seconds * fps))."""

    coarticulation_sigma_s: float = 0.035
    """Standard deviation (s) of the Gaussian that blends neighbouring mouth shapes (coarticulation)."""

    closure_sigma_s: float = 0.012
    """Narrower Gaussian (s) for lip closures (p, b, m) so they still seal the lips after smoothing."""

    anticipation_s: float = 0.03
    """The mouth shape is formed this many seconds before its sound starts."""

    viseme_gain: float = 1.0
    """Multiplier on every mouth weight (articulation strength); results are clipped to [0, 1]."""

    loudness_range_db: float = 20.0
    """Phoneme timings with their audio (TTS and aligned recordings): the mouth opens with the audio's loudness over
    this many dB below the clip's speech level (closed at the bottom of the range); the phonemes give the shape,
    the loudness how wide (0 turns it off)."""

    loudness_headroom_db: float = 6.0
    """Phoneme timings with their audio: the level (dB below the speech level) at which the phonemes' own opening
    is kept as is; louder moments open up to 1.2 times wider."""

    vad_relative_db: float = 30.0
    """Audio path: a moment quieter than the clip's speech level by more than this (dB) is silence."""

    vad_floor_dbfs: float = -50.0
    """Audio path: a moment below this absolute RMS level (dB full scale) is silence, whatever the clip's level."""

    vad_min_pause_s: float = 0.12
    """Audio path: voiced stretches separated by a shorter gap are joined (the mouth does not snap shut)."""

    vad_min_speech_s: float = 0.05
    """Audio path: voiced blips shorter than this are treated as noise."""

    plosive_burst_db: float = 12.0
    """Audio path: a level rise of at least this (dB) within 20 ms after a quiet stretch is a plosive burst;
    the lips close over the quiet stretch before it (0 turns plosive closures off)."""

    plosive_gap_db: float = 15.0
    """Audio path: the stretch before a burst counts as a stop closure when it lies this far (dB) below the
    loudest moment of the burst's following 100 ms."""

    plosive_max_closure_s: float = 0.15
    """Audio path: the longest lip closure (s) laid before a plosive burst; longer quiet is a pause."""

    blink_mean_interval_s: float = 3.5
    """Mean time between blinks (s); intervals are gamma distributed around it."""

    blink_min_gap_s: float = 0.6
    """No two blinks start closer than this (s)."""

    blink_duration_s: float = 0.15
    """Duration of one blink (s): a quick close and a slower reopening."""

    head_sway_deg: float = 1.5
    """Peak amplitude of the idle head rotation (degrees); small because photo mode shows the original head."""

    head_translation: float = 0.002
    """Peak idle head translation (world units, 1 unit = the crop width)."""

    speech_nod_deg: float = 1.0
    """Extra pitch (degrees) nodding with speech emphasis, when speech energy is known."""

    gaze_amplitude: float = 0.25
    """Typical eyeLook weight of a gaze shift (0 = eyes always straight ahead)."""

    gaze_interval_s: tuple[float, float] = (1.0, 3.0)
    """Range (s) of the time a gaze is held before the next saccade."""

    saccade_s: float = 0.05
    """Duration (s) of the quick eye movement between two held gazes."""

    brow_accent: float = 0.15
    """Peak browInnerUp/browOuterUp weight raised on speech emphasis."""

    seed: int = 0
    """Base seed of the idle motion; a row's seed is derived from it and the row key (see idle.derive_seed)."""

    emotion: EmotionConfig = field(default_factory=EmotionConfig)
    """The emotion layer: transitions, strength, and how much it may change the head and the idle motion."""
