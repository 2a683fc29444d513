"""Capture solve on tiny arrays: rigid fit, bounded least squares, rest offset, One-Euro smoothing,
bridging of dropped frames, resampling, and the whole solve on a synthetic performer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import lsq_linear

from tasks.capture.config import CaptureConfig
from tasks.capture.solve import (STABLE_POINTS, bounded_least_squares, bridge, euler_xyz_matrix,
                                 matrix_to_euler_xyz, one_euro, resample, similarity_fit, solve_capture,
                                 speech_channels, video_to_world, with_speech_mouth)
from tasks.capture.tracking import portrait_scores, usable_frames
from tasks.common.arkit import ARKIT_NAMES, INDEX
from tasks.render.blender_job import euler_xyz_matrix as render_euler


def test_euler_matches_the_render_convention_and_round_trips():
    rng = np.random.default_rng(0)
    for pitch, yaw, roll in rng.uniform(-0.6, 0.6, (5, 3)):
        matrix = euler_xyz_matrix(pitch, yaw, roll)
        np.testing.assert_allclose(matrix, render_euler(pitch, yaw, roll), atol=1e-12)
        np.testing.assert_allclose(matrix_to_euler_xyz(matrix), [pitch, yaw, roll], atol=1e-12)


def test_rigid_fit_recovers_a_known_pose():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(40, 3))
    angles = np.array([[0.1, -0.3, 0.05], [-0.2, 0.4, -0.1]])
    rotation = euler_xyz_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    scale = np.array([2.5, 0.7])
    shift = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    target = scale[:, None, None] * np.einsum("tij,nj->tni", rotation, source) + shift[:, None]
    target += rng.normal(scale=1e-4, size=target.shape)
    s, r, t = similarity_fit(source, target)
    np.testing.assert_allclose(s, scale, rtol=1e-3)
    np.testing.assert_allclose(matrix_to_euler_xyz(r), angles, atol=1e-3)
    np.testing.assert_allclose(t, shift, atol=1e-3)
    # A reflection in the target is not turned into a rotation with det -1.
    assert np.allclose(np.linalg.det(r), 1.0)


def test_bounded_least_squares_recovers_known_weights():
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(120, 8))
    truth = np.array([[0.0, 0.3, 1.0, 0.7, 0.0, 0.5, 0.2, 0.9], [1.0, 0.0, 0.0, 0.25, 0.6, 0.0, 1.0, 0.1]])
    recovered = bounded_least_squares(basis, truth @ basis.T, iterations=300)
    np.testing.assert_allclose(recovered, truth, atol=1e-6)


def test_bounded_least_squares_agrees_with_scipy_where_bounds_bind():
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(60, 10))
    # The unconstrained optimum lies outside the box on both sides: bounds bind at 0 and at 1.
    target = basis @ np.array([-0.8, 1.9, 0.4, -0.3, 1.5, 0.6, 0.2, 2.0, -1.0, 0.5]) + rng.normal(scale=0.1, size=60)
    ours = bounded_least_squares(basis, target[None], iterations=2000)[0]
    reference = lsq_linear(basis, target, bounds=(0.0, 1.0)).x
    assert np.any(ours == 0.0) and np.any(ours == 1.0)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_bounded_least_squares_ignores_zero_shapes():
    basis = np.zeros((6, 3))
    basis[:, 0] = 1.0
    weights = bounded_least_squares(basis, np.full((1, 6), 0.5), ridge=0.1)
    assert weights[0, 1] == weights[0, 2] == 0.0 and 0.4 < weights[0, 0] < 0.5


def test_one_euro_keeps_a_step_sharp_and_removes_jitter():
    config = CaptureConfig()
    times = np.arange(50) / 25.0
    step = (times >= 1.0).astype(float)
    filtered = one_euro(step, times, config.weights_min_cutoff_hz, config.weights_beta, config.derivative_cutoff_hz)
    at = int(np.argmax(step))
    assert filtered[at] > 0.7 and filtered[at + 1] > 0.9 and filtered[at - 1] == 0.0
    noisy = 0.3 + np.random.default_rng(4).normal(scale=0.01, size=200)
    smooth = one_euro(noisy, np.arange(200) / 25.0, config.weights_min_cutoff_hz, config.weights_beta,
                      config.derivative_cutoff_hz)
    assert np.std(np.diff(smooth[20:])) < 0.6 * np.std(np.diff(noisy[20:]))


def test_one_euro_honours_uneven_time_steps():
    times = np.array([0.0, 0.04, 0.08, 0.30, 0.34])  # a 220 ms gap, as in variable-frame-rate video
    values = np.array([0.0, 0.0, 0.0, 1.0, 1.0])
    filtered = one_euro(values, times, 1.0, 0.0)
    # A longer step lets the filter move further than the same sample would after a regular step.
    assert filtered[3] > one_euro(values, np.arange(5) * 0.04, 1.0, 0.0)[3]


def test_bridge_interpolates_dropped_frames_in_time():
    times = np.array([0.0, 0.1, 0.3, 0.4, 0.5])
    values = np.array([[0.0], [9.0], [9.0], [4.0], [9.0]])
    valid = np.array([True, False, False, True, False])
    bridged = bridge(values, valid, times)
    np.testing.assert_allclose(bridged[:, 0], [0.0, 1.0, 3.0, 4.0, 4.0])
    with pytest.raises(ValueError):
        bridge(values, np.zeros(5, bool), times)


def test_resample_follows_timestamps():
    times = np.array([0.0, 0.05, 0.2])
    values = np.array([[0.0], [1.0], [4.0]])
    out = resample(values, times, np.array([0.0, 0.04, 0.1, 0.5]))
    np.testing.assert_allclose(out[:, 0], [0.0, 0.8, 2.0, 4.0])


def test_speech_owns_jaw_mouth_and_tongue_only():
    captured = np.full((3, 52), 0.5, np.float32)
    speech = np.zeros((3, 52), np.float32)
    merged = with_speech_mouth(captured, speech, ARKIT_NAMES)
    owned = {ARKIT_NAMES[i] for i in speech_channels(ARKIT_NAMES)}
    assert {"jawOpen", "mouthClose", "mouthSmileLeft", "tongueOut"} <= owned
    assert not owned & {"eyeBlinkLeft", "browInnerUp", "cheekPuff", "noseSneerLeft"}
    assert merged[0, INDEX["jawOpen"]] == 0.0 and merged[0, INDEX["eyeBlinkLeft"]] == 0.5


def _synthetic_rig(rng):
    """A 478-point 'face' with 52 random sparse deltas, in world units."""
    neutral = rng.normal(scale=0.1, size=(478, 3))
    deltas = np.zeros((52, 478, 3))
    for k in range(52):
        points = rng.choice(np.setdiff1d(np.arange(478), STABLE_POINTS), 25, replace=False)
        deltas[k, points] = rng.normal(scale=0.02, size=(25, 3))
    from tasks.reconstruct.topology import face_topology

    topology = face_topology()
    for name, eye in (("eyeBlinkLeft", topology.eye_left), ("eyeBlinkRight", topology.eye_right)):
        # A blink brings the upper lid down onto the lower one.
        upper, lower = eye.upper[1:-1], eye.lower[1:-1]
        deltas[INDEX[name]] = 0.0
        deltas[INDEX[name], upper] = neutral[lower] - neutral[upper]
    return neutral, deltas


def test_solve_recovers_weights_pose_and_ignores_an_asymmetric_rest_face():
    rng = np.random.default_rng(5)
    neutral, deltas = _synthetic_rig(rng)
    n = 120
    times = np.arange(n) / 30.0
    truth = np.zeros((n, 52))
    truth[:, INDEX["jawOpen"]] = np.clip(np.sin(2 * np.pi * 1.3 * times), 0.0, 1.0)
    truth[40:44, INDEX["eyeBlinkLeft"]] = 1.0
    truth[:, INDEX["mouthSmileRight"]] = np.clip(np.sin(2 * np.pi * 0.4 * times + 1.0), 0.0, 1.0) * 0.8
    # The performer: another face shape, a crooked smile at rest, a turning head, seen in pixels.
    performer = neutral + rng.normal(scale=0.004, size=neutral.shape)
    performer_rest = performer + 0.5 * deltas[INDEX["mouthSmileLeft"]]
    angles = np.stack([0.1 * np.sin(2 * np.pi * 0.5 * times), 0.2 * np.sin(2 * np.pi * 0.3 * times),
                       0.05 * np.cos(2 * np.pi * 0.7 * times)], axis=1)
    rotation = euler_xyz_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    faces = performer_rest[None] + np.tensordot(truth, deltas, axes=1)
    world = 900.0 * np.einsum("tij,tnj->tni", rotation, faces) + np.array([300.0, -250.0, 0.0])
    pixels = video_to_world(world)  # the flip is its own inverse
    valid = np.ones(n, bool)
    valid[70:73] = False  # dropped frames: garbage there must not matter
    pixels[70:73] = 1e4
    motion = solve_capture(pixels, valid, times, neutral, deltas, n_frames=100, fps=25.0)
    assert motion.weights.shape == (100, 52) and motion.head_pose.shape == (100, 6)
    out_times = np.arange(100) / 25.0
    expected = resample(truth, times, out_times)
    for name in ("jawOpen", "mouthSmileRight"):
        assert np.corrcoef(motion.weights[:, INDEX[name]], expected[:, INDEX[name]])[0, 1] > 0.95, name
    # The rest smile belongs to the performer, not the performance: it is not passed on.
    assert motion.weights[:, INDEX["mouthSmileLeft"]].max() < 0.15
    blink_frame = int(round(times[41] * 25))
    assert motion.weights[blink_frame, INDEX["eyeBlinkLeft"]] > 0.6
    assert motion.weights[:, INDEX["eyeBlinkLeft"]][out_times > 2.0].max() < 0.1
    expected_angles = resample(angles - angles.mean(axis=0), times, out_times)
    for axis in range(3):
        assert np.corrcoef(motion.head_pose[:, axis], expected_angles[:, axis])[0, 1] > 0.98
    np.testing.assert_allclose(motion.head_pose[:, :3], expected_angles, atol=0.03)


def test_a_shut_eye_as_mediapipe_reads_it_drives_a_full_blink():
    """MediaPipe's lids of a real shut eye stay a little apart, and apart in depth: that reads as a
    full blink, half of it as half, and an open eye as none."""
    from tasks.capture.solve import blink_weights
    from tasks.reconstruct.topology import face_topology

    rng = np.random.default_rng(11)
    neutral, deltas = _synthetic_rig(rng)
    gap = CaptureConfig().closed_lid_gap
    shut, half = neutral.copy(), neutral.copy()
    for eye in (face_topology().eye_left, face_topology().eye_right):
        width = np.linalg.norm(neutral[eye.upper[0], :2] - neutral[eye.upper[-1], :2])
        upper, lower = eye.upper[1:-1], eye.lower[1:-1]
        offset = neutral[upper, :2] - neutral[lower, :2]
        direction = offset / np.linalg.norm(offset, axis=1, keepdims=True)
        shut[upper, :2] = neutral[lower, :2] + gap * width * direction
        shut[upper, 2] += rng.normal(scale=0.3 * width, size=len(upper))  # depth MediaPipe gets wrong
        half[upper, :2] = (neutral[upper, :2] + shut[upper, :2]) / 2
    weights = blink_weights(np.stack([neutral, half, shut]), neutral, neutral, deltas, gap)
    np.testing.assert_allclose(weights[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(weights[1], 0.5, atol=0.02)
    np.testing.assert_allclose(weights[2], 1.0, atol=1e-9)
    # Expecting the lids to meet, the same shut eye would never make a full blink.
    assert blink_weights(shut[None], neutral, neutral, deltas, 0.0).max() < 0.97


def test_a_blink_reopened_by_eyewide_is_closed_as_far_as_the_performers():
    """Shapes fitted after the blinks (eyeWide here) that raise a lid the blink lowered get the blink raised
    until the rig's lids close as far as the performer's; a performer's eye opened wider keeps no blink."""
    from tasks.capture.solve import _apertures, match_lids
    from tasks.reconstruct.topology import face_topology

    rng = np.random.default_rng(7)
    neutral, deltas = _synthetic_rig(rng)
    half_shut, wide = neutral.copy(), neutral.copy()
    for name, eye in (("eyeWideLeft", face_topology().eye_left), ("eyeWideRight", face_topology().eye_right)):
        upper, lower = eye.upper[1:-1], eye.lower[1:-1]
        deltas[:, np.concatenate([upper, lower])] = 0.0  # only the blink and eyeWide move these lids
        deltas[INDEX[name.replace("Wide", "Blink")], upper] = neutral[lower] - neutral[upper]
        deltas[INDEX[name], upper] = 0.3 * (neutral[upper] - neutral[lower])  # lifts the upper lid
        half_shut[upper] = neutral[upper] + 0.4 * (neutral[lower] - neutral[upper])
        wide[upper] = neutral[upper] + 0.1 * (neutral[upper] - neutral[lower])
    solved = np.zeros((2, 52))
    solved[0, [INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]]] = 0.4
    solved[:, [INDEX["eyeWideLeft"], INDEX["eyeWideRight"]]] = 0.3
    solved[:, INDEX["browInnerUp"]] = 0.2
    matched = match_lids(solved, np.stack([half_shut, wide]), neutral, neutral, deltas)
    blinks = [INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]]
    np.testing.assert_allclose(matched[0, blinks], 0.4 + 0.3 * 0.3, atol=1e-6)
    shaped = neutral + np.einsum("k,knd->nd", matched[0], deltas)
    np.testing.assert_allclose(_apertures(shaped), 0.6 * _apertures(neutral), rtol=1e-6)
    np.testing.assert_array_equal(matched[1, blinks], 0.0)
    others = np.setdiff1d(np.arange(52), blinks)
    np.testing.assert_array_equal(matched[:, others], solved[:, others])


def test_lips_sealed_over_an_open_jaw_are_sealed_on_the_rig():
    """A least-squares fit that spreads a seal thin (mouthClose under jawOpen) gets mouthClose raised
    until the rig's lips meet as the performer's do; open lips are left alone."""
    from tasks.capture.solve import seal_lips
    from tasks.reconstruct.topology import face_topology

    rng = np.random.default_rng(3)
    neutral, deltas = _synthetic_rig(rng)
    topology = face_topology()
    upper, lower = topology.lips_inner_upper[1:-1], topology.lips_inner_lower[1:-1]
    neutral[upper, 1] = neutral[lower, 1] + 0.001  # lips just touching at rest
    deltas[INDEX["jawOpen"]] = 0.0
    deltas[INDEX["jawOpen"], lower, 1] = -0.05
    deltas[INDEX["mouthClose"]] = 0.0
    deltas[INDEX["mouthClose"], upper, 1] = -0.02
    deltas[INDEX["mouthClose"], lower, 1] = 0.03
    deltas[INDEX["browInnerUp"], np.concatenate([upper, lower])] = 0.0  # a shape that leaves the lips be
    sealed_face = neutral + 0.4 * deltas[INDEX["jawOpen"]] + 0.4 * deltas[INDEX["mouthClose"]]
    open_face = neutral + 0.4 * deltas[INDEX["jawOpen"]]
    solved = np.zeros((2, 52))
    solved[:, INDEX["jawOpen"]] = 0.4
    solved[:, INDEX["mouthClose"]] = 0.1
    solved[:, INDEX["browInnerUp"]] = 0.3
    sealed = seal_lips(solved, np.stack([sealed_face, open_face]), neutral, neutral, deltas)
    assert sealed[0, INDEX["mouthClose"]] == pytest.approx(0.4, abs=1e-6)
    assert sealed[1, INDEX["mouthClose"]] == pytest.approx(0.1)  # the performer's lips are apart
    others = np.setdiff1d(np.arange(52), [INDEX["mouthClose"]])
    np.testing.assert_array_equal(sealed[:, others], solved[:, others])


def test_dropped_and_portrait_frames():
    found = np.array([True, True, False, True, True])
    sharpness = np.array([100.0, 20.0, 0.0, 90.0, 110.0])
    usable = usable_frames(found, sharpness, blur_ratio=0.35)
    assert usable.tolist() == [True, False, False, True, True]

    from tasks.reconstruct.canonical_shape import load_canonical_shape

    canonical = load_canonical_shape()
    frontal = video_to_world(canonical * 500.0)
    turned = video_to_world(canonical @ euler_xyz_matrix(0.0, 0.5, 0.0).T * 500.0)
    open_mouth = frontal.copy()
    open_mouth[14, 1] += 0.3 * abs(frontal[78, 0] - frontal[308, 0])
    scores = portrait_scores(np.stack([frontal, turned, open_mouth, frontal]),
                             np.array([True, True, True, False]), np.array([50.0, 50.0, 50.0, 50.0]), canonical)
    assert int(np.argmax(scores)) == 0 and scores[3] == 0.0
    assert scores[0] > 5 * max(scores[1], scores[2])


def test_video_rows_pass_the_manifest_suite_and_are_fingerprinted(tmp_path):
    import os

    from stores.expectations import validate_manifest
    from stores.manifest import read_manifest
    from tasks.batch.plan import row_fingerprint, split_rows

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join([
        "id,portrait,identity,text,audio,video,transcript",
        "driver,,,,,d.mp4,",
        "reenact,p.jpg,,,,d.mp4,",
        "dubbed,,,,a.wav,d.mp4,",
        "spoken,,,Hello there.,,d.mp4,",
        "told,,,,,d.mp4,What the video says.",
        "both,,,Hello.,a.wav,d.mp4,",
        "nothing,,,,,,",
        "silent,p.jpg,,,,,",
    ]) + "\n")
    table = read_manifest(manifest)
    errors = validate_manifest(table.to_frame())
    assert sorted(errors) == [5, 6, 7]
    assert errors[5] == "give exactly one of 'text' or 'audio'"
    assert "exactly one of 'portrait' or 'identity'" in errors[6] and "'text' or 'audio'" in errors[7]
    rows, _ = split_rows(table.rows, table.line_numbers, errors, "en")
    assert [(r.id, r.video) for r in rows][:2] == [("driver", "d.mp4"), ("reenact", "d.mp4")]
    video = tmp_path / "d.mp4"
    video.write_bytes(b"one")
    before = row_fingerprint(rows[0], tmp_path, "{}")
    video.write_bytes(b"other")
    os.utime(video, ns=(1, 1))
    assert row_fingerprint(rows[0], tmp_path, "{}") != before
