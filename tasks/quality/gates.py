"""Promotion gates: the baselines a trained model must beat before the production alias may point
at it, and the verdicts recorded as tags of its registered version.

- training length: the run did every step it was set (a wall-clock cap cut nothing short);
- GAN face rate: at least a minimum share of samples has a face (MediaPipe);
- GAN landmark Fréchet distance: below (a share of) the mean face's. The mean training face has a
  face too, so face rate alone cannot tell a generator from a blurred average;
- GAN memorisation: a sample's nearest training face is no closer than two different training
  faces typically are to each other (medians compared, with a margin for sampling noise, plus a
  cap on near-copies). Distances are RMS pixel differences of the aligned crops the GAN trains on
  (the mirrored crops included, since training flips faces): a copied or barely changed training
  face is close in pixels, while a new face of the same pose is not;
- upscaler: its 2× super-resolution PSNR beats bicubic upsampling's;
- style network Gram loss: on held-out faces, at most a set multiple (2×) of the optimisation
  path's on the same faces. An untrained network returns the colour-transferred input, whose Gram
  loss the optimisation path cuts far more than that, so the gate refuses it;
- style network landmark error: on the same faces, no worse than the optimisation path's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tasks.quality.metrics import detect_landmarks, landmark_frechet, normalised_shape


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict on one trained model."""

    gate: str
    passed: bool
    value: float
    """What the model scored."""
    threshold: float
    """What it had to beat."""
    reason: str
    """One line: the figures and the rule."""

    def as_dict(self) -> dict:
        return asdict(self)


def failed_gates(results: list[GateResult]) -> list[GateResult]:
    return [result for result in results if not result.passed]


def training_length_gate(steps_done: int, steps_target: int) -> GateResult:
    """Fails when a wall-clock cap stopped training before its step budget."""
    passed = steps_done >= steps_target
    reason = (f"trained all {steps_target} steps" if passed else
              f"stopped by the time cap after {steps_done} of {steps_target} steps; rerun to resume and finish")
    return GateResult("training_length", passed, float(steps_done), float(steps_target), reason)


def face_rate_gate(face_rate: float, minimum: float) -> GateResult:
    passed = bool(face_rate >= minimum)
    return GateResult("face_rate", passed, float(face_rate), float(minimum),
                      f"face rate {face_rate:.0%} {'≥' if passed else '<'} {minimum:.0%}")


def frechet_gate(frechet: float, mean_face_frechet: float, ratio: float = 1.0) -> GateResult:
    """The samples' landmark FD must be below `ratio` × the mean face's (NaN, too few faces, fails)."""
    limit = mean_face_frechet * ratio
    passed = bool(np.isfinite(frechet) and frechet < limit)
    return GateResult("landmark_frechet", passed, float(frechet), float(limit),
                      f"landmark FD {frechet:.1f} {'<' if passed else '≥'} mean face's {mean_face_frechet:.1f}"
                      + (f" × {ratio:g}" if ratio != 1.0 else "")
                      + ("" if np.isfinite(frechet) else " (fewer than 2 samples had a face)"))


def spread_gate(sample_spread: float, reference_spread: float, share: float = 0.75) -> GateResult:
    """The samples' identity spread must reach `share` × that of as many training faces (NaN, too few
    faces, fails): one face in many colours or a few faces over and over do not."""
    limit = reference_spread * share
    passed = bool(np.isfinite(sample_spread) and np.isfinite(limit) and sample_spread >= limit)
    return GateResult("identity_spread", passed, float(sample_spread), float(limit),
                      f"identity spread {sample_spread:.3f} {'≥' if passed else '<'} {share:g} × the training "
                      f"faces' {reference_spread:.3f}" + ("" if np.isfinite(sample_spread)
                                                          else " (fewer than 2 samples had a face)"))


def memorisation_gate(sample_nn: np.ndarray, training_nn: np.ndarray, ratio: float = 0.9,
                      max_copy_share: float = 0.1) -> GateResult:
    """Samples must be as far from their nearest training face as training faces typically are
    from each other: the median of the samples' nearest-training-face distances must be at least
    `ratio` × the training faces' median nearest-neighbour distance, and at most `max_copy_share`
    of the samples may lie closer to a training face than the closest two training faces do.

    Held-out real faces score a median ratio of about 1 (0.95–1.06 on faces128 at 32²), so 0.9
    leaves room for sampling noise; the mean face scores about 0.7–0.8 and copies near 0."""
    sample_median, training_median = float(np.median(sample_nn)), float(np.median(training_nn))
    limit = training_median * ratio
    copies = float(np.mean(np.asarray(sample_nn) < np.min(training_nn)))
    passed = bool(sample_median >= limit and copies <= max_copy_share)
    return GateResult("memorisation", passed, sample_median, limit,
                      f"median nearest-training-face distance {sample_median:.2f} {'≥' if sample_median >= limit else '<'} "
                      f"{ratio:g} × training faces' median nearest-neighbour distance {training_median:.2f}; "
                      f"{copies:.0%} of samples closer than the closest training pair "
                      f"({'≤' if copies <= max_copy_share else '>'} {max_copy_share:.0%})")


def psnr_gate(model_db: float, bicubic_db: float, margin_db: float = 0.0) -> GateResult:
    """Super-resolution PSNR must exceed bicubic's (+ margin)."""
    limit = bicubic_db + margin_db
    passed = bool(model_db > limit)
    return GateResult("sr_psnr", passed, float(model_db), float(limit),
                      f"SR PSNR {model_db:.2f} dB {'>' if passed else '≤'} bicubic {bicubic_db:.2f} dB"
                      + (f" + {margin_db:g}" if margin_db else ""))


def style_gram_gate(network_gram: float, optimisation_gram: float, ratio: float = 2.0) -> GateResult:
    """The network's mean Gram loss must be at most `ratio` × the optimisation path's (NaN fails)."""
    limit = optimisation_gram * ratio
    passed = bool(np.isfinite(network_gram) and network_gram <= limit)
    return GateResult("style_gram", passed, float(network_gram), float(limit),
                      f"Gram loss {network_gram:.4g} {'≤' if passed else '>'} {ratio:g} × the optimisation "
                      f"path's {optimisation_gram:.4g} on the same held-out faces")


def style_landmark_gate(network_error: float, optimisation_error: float, tolerance: float = 0.0) -> GateResult:
    """The network's mean content landmark error must not exceed the optimisation path's (+
    `tolerance`); NaN (no face on any original) or inf (a face lost) fails."""
    limit = optimisation_error + tolerance
    passed = bool(np.isfinite(network_error) and np.isfinite(limit) and network_error <= limit)
    return GateResult("style_landmarks", passed, float(network_error), float(limit),
                      f"landmark error {network_error:.4f} {'≤' if passed else '>'} the optimisation path's "
                      f"{optimisation_error:.4f}" + (f" + {tolerance:g}" if tolerance else "")
                      + " on the same held-out faces")


# --- the figures the GAN gates compare against ---------------------------------------------------

def _flat(images_u8: np.ndarray) -> np.ndarray:
    return np.asarray(images_u8, np.float32).reshape(len(images_u8), -1)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i − b_j|² for flat float32 rows, as |a|² + |b|² − 2 a·b (clipped at 0)."""
    return np.clip((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0, None)


def _nearest(queries: np.ndarray, pool: np.ndarray, exclude: np.ndarray | None = None,
             block: int = 256) -> np.ndarray:
    """RMS pixel distance of each query to its nearest pool row; exclude[i] = pool indices that
    query i may not match (its own copies)."""
    found = np.empty(len(queries), np.float64)
    for start in range(0, len(queries), block):
        distances = _squared_distances(queries[start:start + block], pool)
        if exclude is not None:
            rows = np.arange(distances.shape[0])[:, None]
            distances[rows, exclude[start:start + block]] = np.inf
        found[start:start + block] = distances.min(axis=1)
    return np.sqrt(found / queries.shape[1])


def training_pool(training_u8: np.ndarray, limit: int = 2000, seed: int = 0) -> np.ndarray:
    """Up to `limit` training crops (a seeded subset: the same for every model compared)."""
    if len(training_u8) < 2:
        raise ValueError(f"the memorisation check needs at least 2 training faces, got {len(training_u8)}")
    if len(training_u8) > limit:
        training_u8 = training_u8[np.sort(np.random.default_rng(seed).choice(len(training_u8), limit, replace=False))]
    return np.asarray(training_u8)


def training_nn_distances(training_u8: np.ndarray) -> np.ndarray:
    """For each training crop (N×H×W×3 uint8), the RMS pixel distance to the nearest *other*
    training crop or its mirror image (its own mirror excluded)."""
    faces = _flat(training_u8)
    pool = np.concatenate([faces, _flat(training_u8[:, :, ::-1])])
    n = len(faces)
    own = np.stack([np.arange(n), np.arange(n) + n], axis=1)
    return _nearest(faces, pool, exclude=own)


def sample_nn_distances(samples_u8: np.ndarray, training_u8: np.ndarray) -> np.ndarray:
    """For each sample, the RMS pixel distance to its nearest training crop or mirrored crop.
    Samples are compared at the training crops' size."""
    if samples_u8.shape[1:] != training_u8.shape[1:]:
        raise ValueError(f"samples {samples_u8.shape[1:]} and training crops {training_u8.shape[1:]} differ in size")
    pool = np.concatenate([_flat(training_u8), _flat(training_u8[:, :, ::-1])])
    return _nearest(_flat(samples_u8), pool)


def mean_face_frechet(training_u8: np.ndarray, reference_shapes: np.ndarray, components: int = 16,
                      upscale_to: int = 256) -> tuple[float, bool]:
    """(landmark FD, face found) of the training crops' mean image, scored as a generator that
    always draws it would be. Where MediaPipe finds no face in the mean image, the FD of a point
    mass at the reference mean shape is used: no single shape scores lower, so the bar is stricter."""
    mean = np.clip(np.round(np.asarray(training_u8, np.float64).mean(axis=0)), 0, 255).astype(np.uint8)
    landmarks = detect_landmarks(mean[None], upscale_to)[0]
    reference = np.asarray(reference_shapes, np.float64)
    if landmarks is None:
        return landmark_frechet(reference.mean(axis=0, keepdims=True), reference, components), False
    return landmark_frechet(normalised_shape(landmarks)[None], reference, components), True
