"""Face-shape variation for synthetic identities: a PCA of the training faces' aligned landmark
shapes, and the per-identity offsets a rig's landmarks get along its main components.

Shapes are similarity-aligned 2D landmarks, so their raw variation also holds head yaw and
one-sided expressions. The model is fitted to each shape's left/right-symmetric part, which drops
those. Symmetric expressions (an open mouth, closed eyes) and head pitch stay in it, so an offset
moves the inner lips and each eye's contour and iris as rigid groups: a face never opens its
mouth or shuts its eyes by changing shape. Proportions remain: face width and length, jaw, eye
spacing, nose, mouth position."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from tasks.dataset.align import apply_affine, fit_similarity
from tasks.quality.metrics import normalised_shape
from tasks.reconstruct.canonical_shape import load_canonical_shape
from tasks.reconstruct.topology import N_LANDMARKS, face_topology

if TYPE_CHECKING:
    from stores.synthetic_store import SyntheticStore

COEFFICIENT_LIMIT = 2.5
"""Drawn coefficients are clipped to this many standard deviations: no caricatures."""


@dataclass(frozen=True)
class ShapeModel:
    """Mean and main components of aligned landmark shapes, in 128² template pixels."""

    mean: np.ndarray
    """(478, 2) mean symmetric shape."""
    components: np.ndarray
    """(K, 478, 2) orthonormal directions, largest variance first."""
    deviations: np.ndarray
    """(K,) standard deviation of the training shapes along each component."""
    n_faces: int


@lru_cache(maxsize=1)
def mirror_index() -> np.ndarray:
    """(478,) index of each landmark's left/right partner, from the symmetric canonical face."""
    from scipy.spatial import cKDTree

    canonical = load_canonical_shape()
    mirrored = canonical * np.array([-1.0, 1.0, 1.0])
    _, partner = cKDTree(canonical).query(mirrored)
    return partner


@lru_cache(maxsize=1)
def rigid_groups() -> tuple[np.ndarray, ...]:
    """Landmarks that move together: the inner lips (so the mouth's opening is kept) and each eye's
    contour with its iris (so its opening is kept)."""
    topology = face_topology()
    lips = np.unique(np.concatenate([topology.lips_inner_upper, topology.lips_inner_lower]))
    return (lips, *(np.unique(np.concatenate([eye.loop, eye.iris])) for eye in (topology.eye_left, topology.eye_right)))


def symmetric_part(shapes: np.ndarray) -> np.ndarray:
    """(N, 478, 2) shapes averaged with their own mirror images (mirrored about their mean x)."""
    shapes = np.asarray(shapes, np.float64)
    mirrored = shapes[:, mirror_index()].copy()
    centre = shapes[..., 0].mean(axis=1, keepdims=True)
    mirrored[..., 0] = 2 * centre - mirrored[..., 0]
    return (shapes + mirrored) / 2


def fit_shape_model(landmarks: np.ndarray, components: int = 8) -> ShapeModel:
    """PCA of (N, 478, ≥2) training-face landmarks (any pixel frame), after alignment and symmetrising."""
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1] != N_LANDMARKS or len(landmarks) < 2:
        raise ValueError(f"a shape model needs (N ≥ 2, 478, 2) landmarks, got {landmarks.shape}")
    shapes = symmetric_part(np.stack([normalised_shape(points).reshape(N_LANDMARKS, 2) for points in landmarks]))
    mean = shapes.mean(axis=0)
    centred = (shapes - mean).reshape(len(shapes), -1)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    k = min(components, len(singular))
    deviations = singular[:k] / np.sqrt(max(len(shapes) - 1, 1))
    # SVD signs are arbitrary: fix each so its largest entry is positive, and a seed moves a face
    # the same way on every machine.
    directions = directions[:k]
    directions = directions * np.sign(directions[np.arange(k), np.abs(directions).argmax(axis=1)])[:, None]
    return ShapeModel(mean=mean, components=directions.reshape(k, N_LANDMARKS, 2), deviations=deviations,
                      n_faces=len(shapes))


def draw_shape_coefficients(seed: int, identity: int, model: ShapeModel, scale: float) -> np.ndarray:
    """(K,) coefficients in standard deviations for an identity: a stream of its own, so switching
    shape variation on or off changes no other draw."""
    rng = np.random.default_rng([seed, identity, 2])
    return np.clip(rng.standard_normal(len(model.deviations)) * scale, -COEFFICIENT_LIMIT, COEFFICIENT_LIMIT)


def shape_offset_px(landmarks_px: np.ndarray, model: ShapeModel, coefficients: np.ndarray) -> np.ndarray:
    """(478, 3) offsets, in the landmarks' own pixels (z zero), that move a face along the model's
    components by `coefficients` standard deviations, at its own size and in-plane rotation."""
    offset = np.tensordot(np.asarray(coefficients) * model.deviations, model.components, axes=1)  # template px
    points = np.asarray(landmarks_px, np.float64)[:, :2]
    to_face = fit_similarity(model.mean, points)  # template → this face, so only its linear part matters
    moved = apply_affine(to_face, model.mean + offset) - apply_affine(to_face, model.mean)
    for group in rigid_groups():
        moved[group] = moved[group].mean(axis=0)
    return np.concatenate([moved, np.zeros((N_LANDMARKS, 1))], axis=1).astype(np.float32)


def _dataset_store(data_dir: str):
    """The data dir's training data sets, or None when there are none (looking creates nothing)."""
    from stores.dataset_store import DatasetStore
    from stores.location import DataLocation

    location = DataLocation(data_dir).join("datasets.zarr")
    return DatasetStore(location.url) if location.exists() else None


def shape_model_record(data_dir: str, variation: float) -> dict:
    """What a data set records of its shape model, read cheaply: the complete training data sets of
    `data_dir` and their face count (none when variation is 0)."""
    store = None if variation == 0 else _dataset_store(data_dir)
    names = [] if store is None else [name for name in store.names() if store.exists(name)]
    attrs = [store.attrs(name) for name in names]
    # The fingerprint changes when a data set is rebuilt from other inputs under the same name.
    return {"data_sets": names, "faces": sum(int(a["n_images"]) for a in attrs),
            "fingerprints": [str(a.get("fingerprint", "")) for a in attrs]}


def load_shape_model(data_dir: str, record: dict, components: int) -> ShapeModel | None:
    """The model fitted to the training faces `record` names (None when they are no more than
    `components`, too few to fit it)."""
    if record["faces"] <= components:
        return None
    store = _dataset_store(data_dir)
    landmarks = np.concatenate([store.read_landmarks(name)[..., :2] for name in record["data_sets"]])
    return fit_shape_model(landmarks, components)


def store_shape_model(store: "SyntheticStore", model: ShapeModel, record: dict) -> None:
    """Keep the model beside the data set it moved, with the training faces it was fitted to."""
    store.write_shape_model({"mean": model.mean, "components": model.components, "deviations": model.deviations},
                            {**record, "n_faces": model.n_faces, "coefficient_limit": COEFFICIENT_LIMIT})


def stored_shape_model(store: "SyntheticStore") -> ShapeModel | None:
    """The model a data set's `shape` coefficients refer to (None when its faces were not moved)."""
    found = store.read_shape_model()
    if found is None:
        return None
    arrays, attrs = found
    return ShapeModel(mean=arrays["mean"], components=arrays["components"], deviations=arrays["deviations"],
                      n_faces=int(attrs["n_faces"]))
