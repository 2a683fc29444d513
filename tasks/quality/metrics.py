"""Generator quality without Inception weights.

- face rate: the share of samples in which MediaPipe finds a face;
- landmark Fréchet distance: the Fréchet distance between Gaussians fitted to the normalised
  478-landmark shapes of samples and of training faces, in the main PCA subspace of the training
  shapes. Shapes are similarity-aligned to the dataset's 128² alignment template, so the distance
  is in squared pixels of a 128² aligned crop, and it measures shape (pose, expression, face
  proportions), not texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tasks.dataset.align import alignment_template, apply_affine, fit_similarity
from tasks.dataset.detect import FaceMeshDetector
from tasks.reconstruct.topology import N_LANDMARKS

SHAPE_TEMPLATE_SIZE = 128
"""Side of the aligned crop whose template normalised shapes are expressed in (pixels)."""


def detect_landmarks(images_u8: np.ndarray, upscale_to: int = 256,
                     min_detection_confidence: float = 0.5) -> list[np.ndarray | None]:
    """(478, 2) landmarks in each image's own pixels, or None where no face is found.

    images_u8: N×H×W×3 uint8. Images whose longer side is under `upscale_to` are upscaled
    (bicubic) to it first: MediaPipe misses most faces in 64² images.
    """
    images_u8 = np.asarray(images_u8)
    if images_u8.ndim != 4 or images_u8.shape[-1] != 3 or images_u8.dtype != np.uint8:
        raise ValueError(f"detect_landmarks needs N×H×W×3 uint8 images, got {images_u8.shape} {images_u8.dtype}")
    height, width = images_u8.shape[1:3]
    factor = max(1.0, upscale_to / max(height, width))
    found: list[np.ndarray | None] = []
    with FaceMeshDetector(min_detection_confidence) as detector:
        for image in images_u8:
            if factor > 1.0:
                size = (round(width * factor), round(height * factor))
                image = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
            points = detector.detect(image)
            found.append(None if points is None else (points[:, :2] / factor).astype(np.float32))
    return found


def face_rate(landmarks_list: list[np.ndarray | None]) -> float:
    """Share of samples with a detected face (0 for an empty list)."""
    if not landmarks_list:
        return 0.0
    return sum(points is not None for points in landmarks_list) / len(landmarks_list)


def normalised_shape(landmarks: np.ndarray) -> np.ndarray:
    """(956,) landmark shape with translation, scale and rotation removed: the (478, 2) points
    mapped by their least-squares similarity onto the 128² alignment template, flattened."""
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.ndim != 2 or landmarks.shape[0] != N_LANDMARKS or landmarks.shape[1] < 2:
        raise ValueError(f"normalised_shape needs (478, 2) landmarks, got {landmarks.shape}")
    template = alignment_template(SHAPE_TEMPLATE_SIZE)
    return apply_affine(fit_similarity(landmarks[:, :2], template), landmarks).reshape(-1)


def _gaussian(points: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    mean = points.mean(axis=0)
    if len(points) < 2:
        return mean, np.zeros((dims, dims))
    return mean, np.atleast_2d(np.cov(points, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """tr((Σa Σb)^½) for covariance matrices, as tr((Σa^½ Σb Σa^½)^½): the two matrices are similar,
    and the symmetric form stays exact when a covariance is singular."""
    root_a = _psd_sqrt(cov_a)
    values = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def landmark_frechet(sample_shapes: np.ndarray, reference_shapes: np.ndarray, components: int = 16) -> float:
    """Fréchet distance between the sample and reference shape distributions.

    Both sets ((N, 956) normalised shapes) are projected onto the first `components` principal
    axes of the reference set (fewer when the reference has fewer shapes), a Gaussian is fitted
    to each, and d² = |μ_s − μ_r|² + tr(Σ_s + Σ_r − 2 (Σ_s Σ_r)^½) is returned. With fewer
    samples than components the sample covariance is singular (one sample: zero); the trace of
    the square root is then still exact, computed from the symmetric form Σ_s^½ Σ_r Σ_s^½
    (the same eigenvalues as Σ_s Σ_r), where scipy.linalg.sqrtm of Σ_s Σ_r becomes inaccurate.
    0 for identical sets.
    """
    samples = np.asarray(sample_shapes, np.float64).reshape(len(sample_shapes), -1)
    reference = np.asarray(reference_shapes, np.float64).reshape(len(reference_shapes), -1)
    if len(samples) < 1 or len(reference) < 2:
        raise ValueError(f"landmark_frechet needs ≥1 sample and ≥2 reference shapes, "
                         f"got {len(samples)} and {len(reference)}")
    if samples.shape[1] != reference.shape[1]:
        raise ValueError(f"shape sizes differ: {samples.shape[1]} vs {reference.shape[1]}")
    if components < 1:
        raise ValueError(f"components must be at least 1, got {components}")
    centre = reference.mean(axis=0)
    _, _, axes = np.linalg.svd(reference - centre, full_matrices=False)
    k = min(components, len(reference) - 1, reference.shape[1])
    basis = axes[:k]
    mean_s, cov_s = _gaussian((samples - centre) @ basis.T, k)
    mean_r, cov_r = _gaussian((reference - centre) @ basis.T, k)
    distance = (np.sum((mean_s - mean_r) ** 2) + np.trace(cov_s) + np.trace(cov_r)
                - 2.0 * _trace_sqrt_product(cov_s, cov_r))
    return float(max(distance, 0.0))


def identity_spread(shapes: np.ndarray) -> float:
    """Median distance from each face's normalised landmark shape to its nearest other one (RMS
    pixels per point of the 128² aligned crop; NaN under two shapes). Face geometry (with pose and
    expression) counts and colour does not, so one face drawn in many colours has almost none, and
    a generator stuck on a few faces has none. It shrinks as the set grows: compare sets of one size
    (see `reference_spread`)."""
    shapes = np.asarray(shapes, np.float64)
    if len(shapes) < 2:
        return float("nan")
    squared = (shapes ** 2).sum(axis=1)
    pairwise = squared[:, None] + squared[None, :] - 2.0 * shapes @ shapes.T
    np.fill_diagonal(pairwise, np.inf)
    return float(np.median(np.sqrt(np.maximum(pairwise.min(axis=1), 0.0) / (shapes.shape[1] // 2))))


def reference_spread(reference_shapes: np.ndarray, size: int, draws: int = 5, seed: int = 0) -> float:
    """`identity_spread` of `size` reference shapes, averaged over seeded random subsets: what a
    set of that many real faces scores."""
    reference_shapes = np.asarray(reference_shapes, np.float64)
    size = min(int(size), len(reference_shapes))
    if size < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    return float(np.mean([identity_spread(reference_shapes[rng.choice(len(reference_shapes), size, replace=False)])
                          for _ in range(draws)]))


@dataclass(frozen=True)
class FaceQuality:
    """Weight-free quality of a batch of generated faces."""

    face_rate: float
    """Share of samples in which MediaPipe finds a face."""

    landmark_frechet: float
    """Fréchet distance (squared pixels of a 128² aligned crop) between the detected samples'
    landmark shapes and the reference shapes; NaN when fewer than 2 samples had a face."""

    n: int
    """Samples evaluated."""

    n_faces: int
    """Samples with a detected face."""

    identity_spread: float = float("nan")
    """`identity_spread` of the detected samples' shapes (NaN under two faces)."""


def evaluate_faces(images_u8: np.ndarray, reference_shapes: np.ndarray, components: int = 16,
                   upscale_to: int = 256) -> FaceQuality:
    """Face rate and landmark Fréchet distance of N×H×W×3 uint8 samples against (M, 956)
    normalised reference shapes (e.g. `normalised_shape` of a dataset's landmarks)."""
    landmarks = detect_landmarks(images_u8, upscale_to)
    shapes = [normalised_shape(points) for points in landmarks if points is not None]
    frechet = landmark_frechet(np.stack(shapes), reference_shapes, components) if len(shapes) >= 2 else float("nan")
    return FaceQuality(face_rate=face_rate(landmarks), landmark_frechet=frechet, n=len(landmarks),
                       n_faces=len(shapes), identity_spread=identity_spread(np.stack(shapes)) if len(shapes) >= 2
                       else float("nan"))


def laplacian_variance(image_u8: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Variance of the grayscale Laplacian (high-frequency detail; a blur lowers it), over the
    pixels where `mask` (H×W bool) is set, or the whole image."""
    from scipy.ndimage import laplace

    image = np.asarray(image_u8, np.float64)
    gray = image @ np.array([0.299, 0.587, 0.114]) if image.ndim == 3 else image
    response = laplace(gray, mode="reflect")
    values = response[mask] if mask is not None else response.reshape(-1)
    if values.size < 2:
        raise ValueError("laplacian_variance needs at least 2 pixels in the mask")
    return float(values.var())
