"""Weight-free generator metrics: face rate, normalised landmark shapes, landmark Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.dataset.align import alignment_template, apply_affine
from tasks.quality.metrics import face_rate, landmark_frechet, normalised_shape


MODES = np.random.default_rng(99).normal(scale=0.3, size=(6, 956))


def _shapes(rng, n, shift=0.0):
    """Random face-like shapes: the template, six correlated modes of variation and a little
    independent noise; `shift` moves the mean by that many standard deviations along mode 0."""
    base = alignment_template(128).reshape(-1)
    coefficients = rng.normal(size=(n, len(MODES)))
    coefficients[:, 0] += shift
    return base + coefficients @ MODES + rng.normal(scale=0.02, size=(n, base.size))


def test_frechet_is_zero_for_identical_sets():
    shapes = _shapes(np.random.default_rng(0), 60)
    assert landmark_frechet(shapes, shapes) == pytest.approx(0.0, abs=1e-6)


def test_frechet_grows_with_a_shift():
    rng = np.random.default_rng(1)
    reference = _shapes(rng, 300)
    distances = [landmark_frechet(_shapes(np.random.default_rng(5), 300, shift), reference)
                 for shift in (0.0, 1.0, 2.0)]
    assert distances[0] < distances[1] < distances[2]
    assert distances[0] < 0.2 * distances[1]
    # A mean shift of d standard deviations along a mode of variance σ² adds about d²σ².
    mode_variance = float(MODES[0] @ MODES[0])
    assert distances[2] - distances[0] == pytest.approx(4 * mode_variance, rel=0.3)


def test_frechet_with_fewer_samples_than_components():
    rng = np.random.default_rng(2)
    reference = _shapes(rng, 40)
    few = _shapes(rng, 3)
    value = landmark_frechet(few, reference, components=16)
    assert np.isfinite(value) and value > 0
    # One sample: zero covariance, so d² = |μ_s − μ_r|² + tr(Σ_r) in the PCA subspace.
    single = landmark_frechet(few[:1], reference, components=5)
    centre = reference.mean(axis=0)
    axes = np.linalg.svd(reference - centre, full_matrices=False)[2][:5]
    projected = (reference - centre) @ axes.T
    expected = np.sum(((few[0] - centre) @ axes.T) ** 2) + np.trace(np.cov(projected, rowvar=False))
    assert single == pytest.approx(expected, rel=1e-9)


def test_normalised_shape_is_invariant_to_similarity_transforms():
    rng = np.random.default_rng(3)
    face = alignment_template(200) + rng.normal(scale=2.0, size=(478, 2))
    c, s = np.cos(0.7), np.sin(0.7)
    moved = apply_affine(np.array([[2.5 * c, -2.5 * s, 40.0], [2.5 * s, 2.5 * c, -13.0]]), face)
    shape = normalised_shape(face)
    assert shape.shape == (956,)
    np.testing.assert_allclose(normalised_shape(moved), shape, atol=1e-8)
    # The template itself normalises onto the 128² template.
    np.testing.assert_allclose(normalised_shape(alignment_template(77)), alignment_template(128).reshape(-1),
                               atol=1e-8)


def test_normalised_shape_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        normalised_shape(np.zeros((68, 2)))


def test_face_rate():
    points = np.zeros((478, 2))
    assert face_rate([None, points, points, None]) == 0.5
    assert face_rate([points]) == 1.0
    assert face_rate([]) == 0.0
