"""The emotion layer: spec parsing, smooth timelines, channel ownership (closures survive), idle reactions,
and the manifest column."""

from pathlib import Path

import numpy as np
import pytest

from stores.expectations import validate_manifest
from stores.manifest import read_manifest
from tasks.animate.compose import animate_from_phonemes, animate_idle
from tasks.animate.config import AnimationConfig, EmotionConfig
from tasks.animate.emotion import (CHANNEL_RULES, EMOTIONS, POSE_MATRIX, EmotionKey, EmotionSpecError,
                                   EmotionTimeline, Rule, apply_emotion, emotion_mixture, idle_mood, lip_seal,
                                   ownership_table_markdown, parse_emotion)
from tasks.animate.idle import IdleMood, idle_motion
from tasks.animate.visemes import mouth_open_series, weights_from_phonemes
from tasks.batch.plan import row_fingerprint, split_rows
from tasks.common.arkit import ARKIT_NAMES, INDEX
from tasks.common.rows import AvatarRow

FPS = 25.0
CONFIG = AnimationConfig()
REPO = Path(__file__).resolve().parents[2]


# --- parsing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, keys", [
    ("happy", [("happy", 1.0, 0.0)]),
    (" Happy : 0.6 ", [("happy", 0.6, 0.0)]),
    ("sad@1.5", [("sad", 1.0, 1.5)]),
    ("neutral@0,happy@2.5,surprised@4.0", [("neutral", 1.0, 0.0), ("happy", 1.0, 2.5), ("surprised", 1.0, 4.0)]),
    ("fearful:0.3@0, disgusted:.5@1.25s", [("fearful", 0.3, 0.0), ("disgusted", 0.5, 1.25)]),
])
def test_parser_reads_single_emotions_intensities_and_timelines(spec, keys):
    timeline = parse_emotion(spec)
    assert [(k.emotion, k.intensity, k.time_s) for k in timeline.keys] == keys
    # The canonical form parses back to the same timeline.
    assert parse_emotion(str(timeline)) == timeline


def test_empty_spec_is_neutral():
    for spec in (None, "", "  "):
        assert parse_emotion(spec).is_neutral
    assert parse_emotion("happy:0").is_neutral and not parse_emotion("happy:0.1").is_neutral


@pytest.mark.parametrize("spec, words", [
    ("hapy", "unknown emotion 'hapy'"),
    ("happy:1.5", "between 0 and 1"),
    ("happy:-0.2", "cannot read emotion"),
    ("neutral@0,happy", "has no time"),
    ("happy@2,sad@1", "must increase"),
    ("happy@1,sad@1", "must increase"),
    ("happy@@2", "cannot read emotion"),
    ("happy,", "has an empty key"),
    ("joy;sad", "cannot read emotion"),
    (",".join(f"happy@{i}" for i in range(300)), "at most 256"),
])
def test_parser_refuses_bad_specs_with_one_line(spec, words):
    with pytest.raises(EmotionSpecError) as caught:
        parse_emotion(spec)
    message = str(caught.value)
    assert words in message and "\n" not in message


# --- timeline ------------------------------------------------------------------------------------------


def test_transitions_are_smooth_and_monotone_between_keys():
    timeline = parse_emotion("neutral@0,happy@1,surprised@3,sad:0.5@3.3")
    step = 0.001
    times = np.arange(0.0, 5.0, step)
    transition = 0.8
    mixture = emotion_mixture(timeline, times, transition)
    assert np.allclose(mixture.sum(axis=1), 1.0)
    pose = mixture @ POSE_MATRIX
    keys = [k.time_s for k in timeline.keys] + [times[-1] + step]
    for start, end in zip(keys[:-1], keys[1:]):
        inside = (times >= start) & (times < end)
        change = np.diff(pose[inside], axis=0)
        # Every channel moves one way only between two keys.
        assert np.all((change >= -1e-12).all(axis=0) | (change <= 1e-12).all(axis=0))
    # Smooth: no step larger than the smootherstep's peak slope (1.875 per transition) allows, even for the
    # short surprised → sad change (0.3 s).
    assert np.abs(np.diff(pose, axis=0)).max() <= 1.875 * step / 0.3 + 1e-9
    # Arrivals: happy fully by 1.8 s; the 0.3 s gap cuts the surprised transition short so it still arrives.
    smile = INDEX["mouthSmileLeft"]
    assert pose[times < 1.0, smile].max() == 0.0
    assert pose[np.searchsorted(times, 1.8), smile] == pytest.approx(POSE_MATRIX[EMOTIONS.index("happy"), smile])
    wide = INDEX["eyeWideLeft"]
    assert pose[np.searchsorted(times, 3.3) - 1, wide] == pytest.approx(POSE_MATRIX[EMOTIONS.index("surprised"), wide],
                                                                         abs=1e-3)
    # sad:0.5 ends half sad, half neutral.
    assert mixture[-1, EMOTIONS.index("sad")] == pytest.approx(0.5)
    assert mixture[-1, EMOTIONS.index("neutral")] == pytest.approx(0.5)


def test_a_late_first_key_starts_from_neutral_and_a_key_at_zero_holds_from_the_start():
    times = np.arange(0, 3.0, 0.04)
    late = emotion_mixture(parse_emotion("happy@1"), times, 0.5)
    assert np.allclose(late[times < 1.0, EMOTIONS.index("neutral")], 1.0)
    assert np.allclose(late[times >= 1.5, EMOTIONS.index("happy")], 1.0)
    assert np.allclose(emotion_mixture(parse_emotion("happy"), times, 0.5)[:, EMOTIONS.index("happy")], 1.0)


# --- ownership -----------------------------------------------------------------------------------------

# "a pa ba ma" with long open vowels between the bilabials.
PHONEMES = [("_", 0.0, 0.3), ("a", 0.3, 0.55), ("p", 0.55, 0.63), ("a", 0.63, 0.9), ("b", 0.9, 0.97),
            ("a", 0.97, 1.25), ("m", 1.25, 1.33), ("a", 1.33, 1.6), ("_", 1.6, 2.4)]
N_FRAMES = 60


def speech_and_idle() -> tuple[np.ndarray, np.ndarray]:
    return animate_from_phonemes(PHONEMES, N_FRAMES / FPS, CONFIG, seed=3)


def test_every_channel_has_one_rule_and_the_readme_shows_the_table():
    assert sorted(CHANNEL_RULES) == sorted(ARKIT_NAMES)
    for name in ("jawOpen", "mouthClose", "mouthPucker", "mouthFunnel", "mouthRollLower", "mouthPressLeft"):
        assert CHANNEL_RULES[name] in (Rule.SPEECH, Rule.SPEECH_FLOOR), name
    for name in ("browInnerUp", "browDownLeft", "cheekSquintLeft", "noseSneerRight", "eyeWideLeft", "eyeSquintRight"):
        assert CHANNEL_RULES[name] is Rule.EMOTION, name
    for name in ("mouthSmileLeft", "mouthStretchRight", "mouthFrownLeft"):
        assert CHANNEL_RULES[name] is Rule.SHARED, name
    assert ownership_table_markdown() in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_a_closure_keeps_the_speech_mouth_under_every_emotion(emotion):
    weights, pose = speech_and_idle()
    seal = lip_seal(weights)
    closed = seal >= 0.99
    assert closed.sum() >= 3  # one frame or more for each of p, b and m
    out, _ = apply_emotion(weights, pose, emotion, FPS)
    for name in ("jawOpen", "mouthClose", "mouthLowerDownLeft", "mouthUpperUpRight", "mouthFunnel", "mouthPucker",
                 "mouthRollLower", "mouthPressLeft"):
        assert np.array_equal(out[closed, INDEX[name]], weights[closed, INDEX[name]]), (emotion, name)
    # The lips are as shut as the speech made them.
    assert np.array_equal(mouth_open_series(out)[closed], mouth_open_series(weights)[closed])
    # Speech-only channels never change, anywhere.
    speech_only = [INDEX[n] for n, r in CHANNEL_RULES.items() if r in (Rule.SPEECH, Rule.SOURCE)]
    assert np.array_equal(out[:, speech_only], weights[:, speech_only])
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0


def test_closure_holds_on_the_audio_path_where_the_jaw_is_shut():
    # The audio path seals a quiet stop with mouthPress while jawOpen may be ~0: the seal must still read 1.
    weights = np.zeros((5, 52), np.float32)
    weights[2, INDEX["mouthPressLeft"]] = weights[2, INDEX["mouthPressRight"]] = 0.35
    seal = lip_seal(weights)
    assert seal[2] == pytest.approx(1.0) and seal[0] == 0.0
    out, _ = apply_emotion(weights, np.zeros((5, 6), np.float32), "surprised", FPS)
    assert out[2, INDEX["jawOpen"]] < 1e-6 and out[0, INDEX["jawOpen"]] > 0.1


def test_emotions_show_outside_closures():
    weights, pose = speech_and_idle()
    silent = np.arange(N_FRAMES) >= 50
    rows = {e: apply_emotion(weights, pose, e, FPS)[0] for e in ("happy", "surprised", "sad", "angry", "disgusted")}
    assert (rows["happy"][silent, INDEX["mouthSmileLeft"]] - weights[silent, INDEX["mouthSmileLeft"]]).min() > 0.5
    assert rows["surprised"][silent, INDEX["browOuterUpRight"]].min() > 0.7
    assert rows["surprised"][silent, INDEX["jawOpen"]].min() > 0.1
    assert rows["sad"][silent, INDEX["mouthFrownLeft"]].min() > 0.4
    assert rows["angry"][silent, INDEX["browDownLeft"]].min() > 0.6
    assert rows["disgusted"][silent, INDEX["noseSneerLeft"]].min() > 0.5
    # Vowels keep their opening: the jaw is never below the speech's.
    for out in rows.values():
        assert np.all(out[:, INDEX["jawOpen"]] >= weights[:, INDEX["jawOpen"]])
    # A shared channel is attenuated at the seal, not removed.
    closed = lip_seal(weights) >= 0.99
    happy_at_seal = rows["happy"][closed, INDEX["mouthSmileLeft"]] - weights[closed, INDEX["mouthSmileLeft"]]
    smile = POSE_MATRIX[EMOTIONS.index("happy"), INDEX["mouthSmileLeft"]]
    assert np.allclose(happy_at_seal, smile * (1 - EmotionConfig().closure_attenuation), atol=1e-6)


def test_neutral_changes_nothing_and_bad_shapes_are_refused():
    weights, pose = speech_and_idle()
    out_w, out_p = apply_emotion(weights, pose, "neutral", FPS)
    assert np.array_equal(out_w, weights) and np.array_equal(out_p, pose)
    plain = animate_from_phonemes(PHONEMES, N_FRAMES / FPS, CONFIG, seed=3, emotion=parse_emotion("neutral"))
    assert np.array_equal(plain[0], weights) and np.array_equal(plain[1], pose)
    with pytest.raises(ValueError, match="weights must be"):
        apply_emotion(weights[:, :10], pose, "happy", FPS)
    with pytest.raises(ValueError, match="head_pose must be"):
        apply_emotion(weights, pose[:-1], "happy", FPS)
    with pytest.raises(EmotionSpecError):
        apply_emotion(weights, pose, "elated", FPS)


def test_timeline_applies_over_a_captured_performance():
    # Any source: a made-up performance with its own brows and blinks keeps them, under the emotion.
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.0, 0.3, (100, 52)).astype(np.float32)
    pose = rng.normal(0.0, 0.02, (100, 6)).astype(np.float32)
    out, out_pose = apply_emotion(weights, pose, "neutral@0,surprised@2", FPS)
    early, late = slice(0, 50), slice(75, 100)
    assert np.array_equal(out[early], weights[early]) and np.array_equal(out_pose[early], pose[early])
    brow = INDEX["browInnerUp"]
    assert np.all(out[late, brow] >= weights[late, brow] + 0.7 - 1e-6)
    # Head lifts back a little (negative pitch) once surprised.
    assert np.allclose(out_pose[late, 0] - pose[late, 0], np.deg2rad(-1.5), atol=1e-6)


# --- idle reacts ---------------------------------------------------------------------------------------


def count_blinks(closure: np.ndarray) -> int:
    closed = closure > 0.5
    return int(np.count_nonzero(closed[1:] & ~closed[:-1]) + closed[0])


def closed_share(closure: np.ndarray) -> float:
    return float(np.mean(closure > 0.5))


def test_neutral_mood_reproduces_the_plain_idle_exactly():
    n = int(20 * FPS)
    plain = idle_motion(n, FPS, 5, CONFIG)
    moody = idle_motion(n, FPS, 5, CONFIG, mood=IdleMood.plain(n))
    assert np.array_equal(plain[0], moody[0]) and np.array_equal(plain[1], moody[1])
    from_timeline = idle_motion(n, FPS, 5, CONFIG, mood=idle_mood(parse_emotion("neutral"), n, FPS))
    assert np.array_equal(plain[0], from_timeline[0])
    with pytest.raises(ValueError, match="mood.sway"):
        idle_motion(n, FPS, 5, CONFIG, mood=IdleMood(*([np.ones(n)] * 2), np.ones(3), *([np.ones(n)] * 3)))


def test_idle_reacts_to_the_emotion():
    seconds = 120.0
    seeds = range(4)
    runs = {e: [animate_idle(seconds, CONFIG, seed, parse_emotion(e)) for seed in seeds]
            for e in ("neutral", "sad", "surprised", "angry", "fearful")}

    def blinks(e):
        return sum(count_blinks(w[:, INDEX["eyeBlinkLeft"]]) for w, _ in runs[e])

    def pitch(e):
        return np.mean([p[:, 0].mean() for _, p in runs[e]])

    def sway(e):
        return np.mean([p[:, 1].std() for _, p in runs[e]])

    def gaze_moves(e):
        return np.mean([np.mean(np.abs(np.diff(w[:, INDEX["eyeLookOutLeft"]])) > 1e-6) for w, _ in runs[e]])

    # Sad: the head droops (pitch > 0 tips the face down), blinks come less often and last longer.
    assert pitch("sad") - pitch("neutral") > np.deg2rad(2.5)
    assert blinks("sad") < blinks("neutral")
    def closed_per_blink(e):
        return sum(closed_share(w[:, INDEX["eyeBlinkLeft"]]) for w, _ in runs[e]) / blinks(e)

    assert closed_per_blink("sad") > 1.2 * closed_per_blink("neutral")
    # Surprised: far fewer blinks, wide eyes.
    assert blinks("surprised") < 0.75 * blinks("neutral")
    assert min(w[:, INDEX["eyeWideLeft"]].min() for w, _ in runs["surprised"]) >= 0.6 - 1e-6
    # Angry: a stiller head. Fearful: darting eyes.
    assert sway("angry") < 0.5 * sway("neutral")
    assert gaze_moves("fearful") > 1.5 * gaze_moves("neutral")
    # Deterministic: the same seed and emotion give the same motion.
    again = animate_idle(seconds, CONFIG, 0, parse_emotion("sad"))
    assert np.array_equal(again[0], runs["sad"][0][0]) and np.array_equal(again[1], runs["sad"][0][1])


# --- manifest column -----------------------------------------------------------------------------------


def test_emotion_column_is_checked_carried_and_fingerprinted(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("\n".join([
        "id,portrait,text,emotion",
        "plain,p.jpg,hi,",
        "glad,p.jpg,hi,happy:0.6",
        "story,p.jpg,hi,\"neutral@0,happy@2.5,surprised@4.0\"",
        "typo,p.jpg,hi,hapy",
        "backwards,p.jpg,hi,\"happy@2,sad@1\"",
    ]) + "\n", encoding="utf-8")
    table = read_manifest(path)
    errors = validate_manifest(table.to_frame())
    assert errors == {
        3: "emotion: unknown emotion 'hapy'; choose one of neutral, happy, sad, angry, surprised, fearful, disgusted",
        4: "emotion: emotion timeline times must increase: 'sad@1' comes at or before 2 s",
    }
    valid, quarantined = split_rows(table.rows, table.line_numbers, errors, "en")
    assert [(r.id, r.emotion) for r in valid] == [("plain", None), ("glad", "happy:0.6"),
                                                  ("story", "neutral@0,happy@2.5,surprised@4.0")]
    assert [q["id"] for q in quarantined] == ["typo", "backwards"]
    assert parse_emotion(valid[2].emotion).keys[1] == EmotionKey("happy", 1.0, 2.5)
    glad = valid[1]
    sadder = AvatarRow(id="glad", line=3, portrait="p.jpg", text="hi", emotion="sad:0.6")
    assert row_fingerprint(glad, tmp_path, "{}") != row_fingerprint(sadder, tmp_path, "{}")


def test_emotion_config_round_trips_inside_the_animation_config():
    from avatarflow.presets import config_from_dict, config_to_dict

    config = AnimationConfig(emotion=EmotionConfig(transition_s=0.5, gain=0.8))
    assert config_from_dict(AnimationConfig, config_to_dict(config)) == config


def test_timeline_type_is_frozen():
    timeline = EmotionTimeline()
    with pytest.raises(AttributeError):
        timeline.keys = ()  # type: ignore[misc]
