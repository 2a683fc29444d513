"""Tracked landmarks → ARKit weights and head pose on a rig: rigid fit, bounded least squares,
rest offset, One-Euro smoothing, bridging of dropped frames and resampling to the output fps.

Coordinates: video landmarks come in pixels (x right, y down, z on the x scale, negative toward
the camera) and are turned into a right-handed frame with y up and z toward the camera, the
convention of the rig's world (tasks/reconstruct/rig.py). Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.capture.config import CaptureConfig
from tasks.common.arkit import INDEX

STABLE_POINTS = np.array([
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,  # forehead centre line and nose bridge
    33, 133, 362, 263,  # eye corners
    234, 454, 127, 356, 93, 323,  # sides of the face at the temples and cheekbones
    21, 251, 54, 284, 103, 332, 109, 338, 67, 297,  # upper forehead
])
"""MediaPipe landmarks that move with the skull, not with the expression: the rigid fit uses only these."""


def video_to_world(landmarks_px: np.ndarray) -> np.ndarray:
    """(…, N, 3) pixel landmarks → x right, y up, z toward the camera, still in pixels."""
    points = np.asarray(landmarks_px, np.float64)
    return points * np.array([1.0, -1.0, -1.0])


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale s (T,), rotation R (T, 3, 3) and translation t (T, 3) with target ≈ s · source @ R.T + t.

    source: (N, 3) points; target: (T, N, 3) or (N, 3). Umeyama's closed form, no reflection.
    """
    target = np.asarray(target, np.float64)
    single = target.ndim == 2
    target = target[None] if single else target
    source = np.asarray(source, np.float64)
    source_mean = source.mean(axis=0)
    target_mean = target.mean(axis=1)
    a = source - source_mean
    b = target - target_mean[:, None]
    covariance = np.einsum("ni,tnj->tij", a, b)  # Σ a_n b_nᵀ
    u, sigma, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(np.einsum("tij,tjk->tik", u, vt)))
    correction = np.ones((len(target), 3))
    correction[:, 2] = sign
    # R maps source to target: R = V · diag(1, 1, ±1) · Uᵀ
    rotation = np.einsum("tji,tj,tkj->tik", vt, correction, u)
    scale = (sigma * correction).sum(axis=1) / (a ** 2).sum()
    translation = target_mean - scale[:, None] * np.einsum("tij,j->ti", rotation, source_mean)
    if single:
        return scale[0], rotation[0], translation[0]
    return scale, rotation, translation


def euler_xyz_matrix(pitch, yaw, roll) -> np.ndarray:
    """Rotation matrices of Blender's XYZ Euler (R = Rz Ry Rx), the render stage's head pose; (…, 3, 3)."""
    pitch, yaw, roll = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (pitch, yaw, roll)))
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    return np.stack([
        np.stack([cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx], axis=-1),
        np.stack([sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx], axis=-1),
        np.stack([-sy, cy * sx, cy * cx], axis=-1),
    ], axis=-2)


def matrix_to_euler_xyz(rotation: np.ndarray) -> np.ndarray:
    """(…, 3, 3) rotations → (…, 3) (pitch, yaw, roll) radians with R = Rz(roll) Ry(yaw) Rx(pitch)."""
    r = np.asarray(rotation, np.float64)
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([pitch, yaw, roll], axis=-1)


def mean_rotation(rotations: np.ndarray) -> np.ndarray:
    """The rotation nearest (chordal L2) to the mean of (T, 3, 3) rotations."""
    u, _, vt = np.linalg.svd(np.asarray(rotations, np.float64).mean(axis=0))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def bounded_least_squares(basis: np.ndarray, targets: np.ndarray, lower: float = 0.0, upper: float = 1.0,
                          ridge: float = 0.0, iterations: int = 150) -> np.ndarray:
    """min ‖basis · w − target‖² + λ‖w‖² with lower ≤ w ≤ upper, for every row of targets at once.

    basis: (M, K); targets: (T, M); λ_k = ridge × column k's squared norm, so the shrinkage is the
    same for a shape that moves a few eyelid points as for one that moves the whole jaw. Projected (Gauss–
    Seidel) coordinate descent on the K×K normal equations, vectorised over T: it converges to the
    box-constrained optimum because the problem is convex. Columns of zeros get weight `lower`
    clipped to 0 when 0 lies in the box. Returns (T, K) float64.
    """
    basis = np.asarray(basis, np.float64)
    targets = np.atleast_2d(np.asarray(targets, np.float64))
    gram = basis.T @ basis
    norms = np.diag(gram).copy()
    live = norms > 1e-12 * max(norms.max(), 1e-300)
    gram += ridge * np.diag(norms)
    rhs = targets @ basis
    k = gram.shape[0]
    weights = np.full((targets.shape[0], k), np.clip(0.0, lower, upper))
    indices = np.flatnonzero(live)
    diagonal = np.diag(gram)
    for _ in range(iterations):
        for j in indices:
            # Exact minimiser along coordinate j, then projected onto the box.
            step = (rhs[:, j] - weights @ gram[:, j]) / diagonal[j]
            weights[:, j] = np.clip(weights[:, j] + step, lower, upper)
    return weights


def one_euro(values: np.ndarray, times: np.ndarray, min_cutoff_hz: float, beta: float,
             derivative_cutoff_hz: float = 1.0) -> np.ndarray:
    """One-Euro filter (Casiez et al. 2012) of (T, C) samples at times (T,) in seconds.

    A low-pass whose cutoff rises with the signal's speed: still signals lose their jitter, fast
    moves (a blink, a lip closure) pass with little lag. Uneven time steps are honoured.
    """
    x = np.asarray(values, np.float64)
    squeeze = x.ndim == 1
    x = x[:, None] if squeeze else x
    times = np.asarray(times, np.float64)
    out = np.empty_like(x)
    if len(x) == 0:
        return out[:, 0] if squeeze else out

    def alpha(cutoff, dt):
        tau = 1.0 / (2.0 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    out[0] = x[0]
    speed = np.zeros(x.shape[1])
    for i in range(1, len(x)):
        dt = max(times[i] - times[i - 1], 1e-6)
        raw_speed = (x[i] - out[i - 1]) / dt
        speed += alpha(derivative_cutoff_hz, dt) * (raw_speed - speed)
        a = alpha(min_cutoff_hz + beta * np.abs(speed), dt)
        out[i] = out[i - 1] + a * (x[i] - out[i - 1])
    return out[:, 0] if squeeze else out


def bridge(values: np.ndarray, valid: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(T, …) values with the invalid frames replaced by linear interpolation in time between the
    nearest valid frames (held flat before the first and after the last). Needs one valid frame."""
    values = np.asarray(values, np.float64)
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("bridge needs at least one valid frame")
    if valid.all():
        return values.copy()
    flat = values.reshape(len(values), -1)
    known = np.flatnonzero(valid)
    out = flat.copy()
    for column in range(flat.shape[1]):
        out[:, column] = np.interp(times, times[known], flat[known, column])
    return out.reshape(values.shape)


def resample(values: np.ndarray, times: np.ndarray, new_times: np.ndarray) -> np.ndarray:
    """(T, C) samples at times (T,) → (len(new_times), C) by linear interpolation, held at the ends."""
    values = np.asarray(values, np.float64)
    return np.stack([np.interp(new_times, times, values[:, c]) for c in range(values.shape[1])], axis=1)


@dataclass(frozen=True)
class CapturedMotion:
    """A driving video solved on a rig, at the output frame rate."""

    weights: np.ndarray
    """(T_out, K) float32 blendshape weights in [0, 1]."""

    head_pose: np.ndarray
    """(T_out, 6) float32 (pitch, yaw, roll) radians then (tx, ty, tz) world units, about the rig's pivot."""

    source_weights: np.ndarray
    """(T, K) float32 weights at the video's own frames, before smoothing."""

    rest_offset: np.ndarray
    """(K,) the performer's rest expression in weight units, relative to their median face."""

    fit_error: np.ndarray
    """(T,) float32 RMS landmark residual of each frame after the solve, in inter-ocular distances."""


BLINKS = np.array([INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]])
"""The blink shapes of the subject's left and right eye, set from the lid aperture."""

MOUTH_CLOSE = INDEX["mouthClose"]
"""The shape raised where the performer's lips meet over an open jaw (see seal_lips)."""


def _apertures(shapes: np.ndarray) -> np.ndarray:
    """(…, 2) lid aperture of each eye: mean distance, in the image plane, between its three middle
    pairs of upper- and lower-lid points. MediaPipe's lids of a closed eye stay apart in depth and
    toward the corners, so counting those reads a real eye's full blink as a partial one."""
    from tasks.reconstruct.topology import face_topology

    topology = face_topology()
    out = []
    for eye in (topology.eye_left, topology.eye_right):
        middle = len(eye.upper) // 2
        upper, lower = eye.upper[middle - 1:middle + 2], eye.lower[middle - 1:middle + 2]
        out.append(np.linalg.norm(shapes[..., upper, :2] - shapes[..., lower, :2], axis=-1).mean(axis=-1))
    return np.stack(out, axis=-1)


def _eye_widths(shape: np.ndarray) -> np.ndarray:
    """(2,) corner-to-corner width of each eye of one (N, 3) face, in the image plane."""
    from tasks.reconstruct.topology import face_topology

    topology = face_topology()
    return np.array([np.linalg.norm(shape[eye.upper[0], :2] - shape[eye.upper[-1], :2])
                     for eye in (topology.eye_left, topology.eye_right)])


MIN_BLINK_REACH = 0.05
"""Share of its rest aperture a rig's blink must close at weight 1 to show; a weaker blink stays at 0."""


def _lid_closure(aligned: np.ndarray, rest_face: np.ndarray, closed_gap: float) -> np.ndarray:
    """(T, 2) how far each eye of each frame has closed from the performer's rest (0) toward a shut eye
    (1, a lid gap of `closed_gap` eye widths); negative when it opens wider than at rest."""
    rest = _apertures(rest_face)
    shut = closed_gap * _eye_widths(rest_face)
    return (rest - _apertures(aligned)) / np.maximum(rest - shut, 1e-12)


def _blink_reach(neutral: np.ndarray, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2,) the rig's lid aperture at rest, and (2,) the share of it each eye's blink closes at weight 1."""
    rig = _apertures(neutral)
    return rig, np.array([1.0 - _apertures(neutral + deltas[BLINKS[eye]])[eye] / rig[eye] for eye in range(2)])


def blink_weights(aligned: np.ndarray, rest_face: np.ndarray, neutral: np.ndarray, deltas: np.ndarray,
                  closed_gap: float = 0.0) -> np.ndarray:
    """(T, 2) eyeBlinkLeft and eyeBlinkRight from each eye's lid aperture: its closure from the
    performer's rest toward a shut eye (a lid gap of `closed_gap` eye widths), over the closure
    the rig's own blink shape makes at weight 1. Solved with the rest of the face instead,
    gaze-down and squint (which also lower a lid) take part of every blink, and the eye never closes."""
    closure = _lid_closure(aligned, rest_face, closed_gap)
    _, full = _blink_reach(neutral, deltas)
    # A rig whose blink barely moves its lids cannot show a blink: its weight stays 0.
    return np.where(full > MIN_BLINK_REACH, np.clip(closure / np.maximum(full, 1e-6), 0.0, 1.0), 0.0)


def match_lids(solved: np.ndarray, aligned: np.ndarray, rest_face: np.ndarray, neutral: np.ndarray,
               deltas: np.ndarray, closed_gap: float = 0.0) -> np.ndarray:
    """(T, K) weights with each blink raised or lowered until the rig's lid aperture, with every other
    shape applied, closes as far as the performer's (see blink_weights). The other shapes are fitted
    after the blinks, and their lid-raising part (eyeWide fitting how a performer's lid folds as it
    drops) would otherwise open again a lid the blink had closed."""
    closure = _lid_closure(aligned, rest_face, closed_gap)
    rig, full = _blink_reach(neutral, deltas)
    flat = np.asarray(deltas, np.float64).reshape(len(deltas), -1)
    # The share of each eye's rest aperture the rig closes with every shape applied.
    closed = 1.0 - _apertures((neutral.reshape(-1) + solved @ flat).reshape(len(solved), *neutral.shape)) / rig
    matched = solved.copy()
    for eye, blink in enumerate(BLINKS):
        if full[eye] > MIN_BLINK_REACH:
            matched[:, blink] = np.clip(solved[:, blink] + (closure[:, eye] - closed[:, eye]) / full[eye], 0.0, 1.0)
    return matched


def _lip_gaps(shapes: np.ndarray) -> np.ndarray:
    """(…,) inner-lip opening: mean upward distance, in the image plane, from the lower to the upper
    inner lip over the three middle pairs (negative when the lips press past each other)."""
    from tasks.reconstruct.topology import face_topology

    topology = face_topology()
    middle = len(topology.lips_inner_upper) // 2
    upper = topology.lips_inner_upper[middle - 1:middle + 2]
    lower = topology.lips_inner_lower[middle - 1:middle + 2]
    return (shapes[..., upper, 1] - shapes[..., lower, 1]).mean(axis=-1)


def seal_lips(solved: np.ndarray, aligned: np.ndarray, rest_face: np.ndarray, neutral: np.ndarray,
              deltas: np.ndarray) -> np.ndarray:
    """(T, K) weights with mouthClose raised wherever the rig's lips would stay further apart than
    the performer's: a speaker often seals the lips with the jaw a little open (p, b, m, a pause),
    and a least-squares fit over the whole face spreads that closure thin instead of closing them."""
    target = _lip_gaps(neutral + aligned - rest_face)
    flat = np.asarray(deltas, np.float64).reshape(len(deltas), -1)
    predicted = _lip_gaps((neutral.reshape(-1) + solved @ flat).reshape(len(solved), *neutral.shape))
    per_close = _lip_gaps(neutral + deltas[MOUTH_CLOSE]) - _lip_gaps(neutral)
    sealed = solved.copy()
    if per_close < 0:  # the rig's mouthClose brings the lips together
        close = sealed[:, MOUTH_CLOSE] + np.maximum(predicted - np.maximum(target, 0.0), 0.0) / -per_close
        sealed[:, MOUTH_CLOSE] = np.clip(close, 0.0, 1.0)
    return sealed


def rest_shape(aligned: np.ndarray, percentile: float) -> np.ndarray:
    """(N, 3) mean of the (T, N, 3) aligned faces whose inner-lip gap lies at or below its
    `percentile` among the frames with open eyes (lid gap at least 80% of the median)."""
    gap = np.linalg.norm(aligned[:, 13] - aligned[:, 14], axis=1)
    lids = np.linalg.norm(aligned[:, 159] - aligned[:, 145], axis=1) + np.linalg.norm(aligned[:, 386] - aligned[:, 374], axis=1)
    open_eyes = lids >= 0.8 * np.median(lids)
    candidates = np.flatnonzero(open_eyes) if open_eyes.any() else np.arange(len(aligned))
    chosen = candidates[gap[candidates] <= np.percentile(gap[candidates], percentile)]
    return aligned[chosen].mean(axis=0)


def landmark_weights(n_points: int, config: CaptureConfig) -> np.ndarray:
    """(N, 3) weight of each landmark coordinate in the solve: eyelids and lips, which make blinks
    and closures, count more; the iris less (it drops with the lid on a blink); depth less."""
    from tasks.reconstruct.topology import face_topology

    topology = face_topology()
    per_point = np.ones(n_points)
    for eye in (topology.eye_left, topology.eye_right):
        per_point[eye.loop] = config.eyelid_weight
        per_point[eye.iris] = config.iris_weight
    lips = np.concatenate([topology.lips_inner_loop, topology.lips_outer_upper, topology.lips_outer_lower])
    per_point[lips] = config.lip_weight
    return per_point[:, None] * np.array([1.0, 1.0, config.z_weight])


def solve_capture(landmarks_px: np.ndarray, valid: np.ndarray, times: np.ndarray, neutral: np.ndarray,
                  deltas: np.ndarray, n_frames: int, fps: float,
                  config: CaptureConfig = CaptureConfig(), reference_frame: int | None = None) -> CapturedMotion:
    """Solve tracked landmarks on a rig and resample the motion to n_frames at fps.

    landmarks_px: (T, N, 3) video pixels (frames not `valid` are ignored and bridged); times: (T,)
    seconds from the video's first frame; neutral: (N, 3) the rig's landmark positions in world
    units; deltas: (K, N, 3) its blendshape deltas on those landmarks. The head pose turns about
    the rig's own pivot (the render's convention). reference_frame: the frame the rig was built
    from, when its portrait is a frame of this video: the head pose is 0 there, so the avatar shows
    its photo unturned when the performer is back in that pose; else the clip's mean pose is 0.
    """
    valid = np.asarray(valid, bool)
    times = np.asarray(times, np.float64)
    neutral = np.asarray(neutral, np.float64)
    if not valid.any():
        raise ValueError("solve_capture needs at least one frame with a face")
    observed = video_to_world(landmarks_px)[valid]

    # 1. Rigid fit of the rig's neutral face to every frame, on landmarks that do not move with expression.
    scale, rotation, translation = similarity_fit(neutral[STABLE_POINTS], observed[:, STABLE_POINTS])
    # 2. Each frame brought back into the rig's frame: what is left is expression (and identity).
    aligned = np.einsum("tij,tnj->tni", np.transpose(rotation, (0, 2, 1)),
                        observed - translation[:, None]) / scale[:, None, None]

    # 3. The performer's rest face: the mean of their frames with the mouth closed the most and the
    #    eyes open (a low percentile of the lip gap). Subtracting it, an asymmetric or smiling face
    #    at rest drives the avatar's neutral face. Then bounded least squares on the deltas.
    rest_face = rest_shape(aligned, config.rest_percentile)
    zscale = landmark_weights(len(neutral), config)
    basis = (np.asarray(deltas, np.float64) * zscale).reshape(len(deltas), -1).T
    residual = ((aligned - rest_face) * zscale).reshape(len(aligned), -1)
    # The blinks come first, from the eyes' own apertures (see blink_weights); then the other shapes.
    solved = np.zeros((len(aligned), len(deltas)))
    solved[:, BLINKS] = blink_weights(aligned, rest_face, neutral, deltas, config.closed_lid_gap)
    free = np.setdiff1d(np.arange(len(deltas)), BLINKS)
    solved[:, free] = bounded_least_squares(basis[:, free], residual - solved @ basis.T, 0.0, 1.0, config.ridge,
                                            config.solver_iterations)
    solved = match_lids(solved, aligned, rest_face, neutral, deltas, config.closed_lid_gap)
    solved = seal_lips(solved, aligned, rest_face, neutral, deltas)
    rest_offset = bounded_least_squares(basis, ((rest_face - np.median(aligned, axis=0)) * zscale).reshape(1, -1),
                                        -1.0, 1.0, config.ridge, config.solver_iterations)[0]
    inter_ocular = np.linalg.norm(neutral[33] - neutral[263])
    fit_error = np.sqrt(((residual - solved @ basis.T) ** 2).reshape(len(aligned), -1, 3).sum(axis=2)
                        .mean(axis=1)) / inter_ocular

    # 4. Head pose relative to the performer's mean orientation and position: the rig at rest is the
    #    portrait's own pose. The render turns the head about the rig's pivot, behind the face, as a
    #    neck does, so a turn swings the face over the photo the way a viewer reads a turn; the
    #    translation is the face's own move in the image plane.
    at = None
    if reference_frame is not None and valid[reference_frame]:
        at = int(np.count_nonzero(valid[:reference_frame]))  # its row among the valid frames
    reference = mean_rotation(rotation) if at is None else rotation[at]
    relative_rotation = np.einsum("tij,kj->tik", rotation, reference)
    angles = matrix_to_euler_xyz(relative_rotation) * config.rotation_gain
    centre = neutral[STABLE_POINTS].mean(axis=0)
    imaged = scale[:, None] * np.einsum("tij,j->ti", rotation, centre) + translation
    origin = np.median(imaged, axis=0) if at is None else imaged[at]
    shift = (imaged - origin) / np.median(scale) * config.translation_gain
    shift[:, 2] = 0.0  # MediaPipe's depth is relative: a move toward the camera is not measured
    pose = np.concatenate([angles, shift], axis=1)

    # 5. Dropped frames bridged, then smoothed on the video's own (possibly uneven) timestamps.
    full_weights = np.zeros((len(times), len(deltas)))
    full_weights[valid] = solved
    full_pose = np.zeros((len(times), 6))
    full_pose[valid] = pose
    full_weights = bridge(full_weights, valid, times)
    full_pose = bridge(full_pose, valid, times)
    smooth_weights = one_euro(full_weights, times, config.weights_min_cutoff_hz, config.weights_beta,
                              config.derivative_cutoff_hz)
    smooth_pose = one_euro(full_pose, times, config.pose_min_cutoff_hz, config.pose_beta,
                           config.derivative_cutoff_hz)

    # 6. Output frame k shows the video at k / fps: sound (which starts with the first frame) and
    #    picture stay in step at any input frame rate.
    out_times = np.arange(int(n_frames)) / float(fps)
    weights = np.clip(resample(smooth_weights, times, out_times), 0.0, 1.0)
    head_pose = resample(smooth_pose, times, out_times)
    errors = np.full(len(times), np.nan)
    errors[valid] = fit_error
    return CapturedMotion(weights=weights.astype(np.float32), head_pose=head_pose.astype(np.float32),
                          source_weights=full_weights.astype(np.float32), rest_offset=rest_offset,
                          fit_error=errors.astype(np.float32))


def speech_channels(names: tuple[str, ...]) -> np.ndarray:
    """Indices of the channels speech owns when a script is spoken over a driving video."""
    return np.array([i for i, n in enumerate(names) if n.startswith(("jaw", "mouth")) or n == "tongueOut"], np.int64)


def with_speech_mouth(captured: np.ndarray, speech: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Captured weights whose jaw, mouth and tongue channels are replaced by speech's (same T × K)."""
    if captured.shape != speech.shape:
        raise ValueError(f"captured weights {captured.shape} and speech weights {speech.shape} differ")
    out = np.asarray(captured, np.float32).copy()
    owned = speech_channels(names)
    out[:, owned] = speech[:, owned]
    return out
