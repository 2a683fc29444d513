"""What the label suite and the data-set summary look at: one row of measurements per rendered
sample, read back from the store (so they judge what was written, not what was meant)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from PIL import Image

from stores.synthetic_store import SyntheticStore
from tasks.synthesize.labels import CLASS_ID, SEGMENTATION_CLASSES


def sample_measurements(store: SyntheticStore, index: pd.DataFrame, resolution: int) -> pd.DataFrame:
    """Per indexed sample: visible landmarks outside the image, the image's grey-level spread,
    pixels of each segmentation class, how the head surrounds the face, and the head angles
    against the camera."""
    labels = store.labels()
    samples = index["sample"].to_numpy()
    points = labels["landmarks_2d"].get_orthogonal_selection((samples,))
    visible = labels["visible"].get_orthogonal_selection((samples,))
    outside = ((points < 0) | (points >= resolution)).any(axis=-1) & visible
    measurements = {"sample": samples, "visible_outside": outside.sum(axis=1),
                    "yaw_deg": index["yaw_deg"].to_numpy(), "pitch_deg": index["pitch_deg"].to_numpy()}
    counts = np.zeros((len(samples), len(SEGMENTATION_CLASSES)), dtype=np.int64)
    spread = np.zeros(len(samples))
    hidden_on_surface = np.zeros(len(samples))
    enclosed, head_border = np.zeros(len(samples), dtype=np.int64), np.zeros(len(samples))
    depth_points = labels["landmarks_3d"].get_orthogonal_selection((samples,))[..., 2]
    for row, (sample, image) in enumerate(zip(samples, index["image"])):
        segmentation = labels["segmentation"][int(sample)]
        hidden_on_surface[row] = _hidden_on_surface_excess(labels["depth"][int(sample)], points[row], visible[row],
                                                           depth_points[row], resolution)
        enclosed[row], head_border[row] = figure_measures(segmentation)
        counts[row] = np.bincount(segmentation.ravel(), minlength=len(SEGMENTATION_CLASSES))[:len(SEGMENTATION_CLASSES)]
        spread[row] = float(np.asarray(Image.fromarray(store.read_image(image)).convert("L"), dtype=np.float32).std())
    measurements["pixel_std"] = spread
    measurements["hidden_on_surface_excess"] = hidden_on_surface
    measurements["enclosed_background"] = enclosed
    measurements["head_border_share"] = head_border
    for k, name in enumerate(SEGMENTATION_CLASSES):
        measurements[f"pixels_{name}"] = counts[:, k]
    return pd.DataFrame(measurements)


FACE_CLASSES = [CLASS_ID[name] for name in ("skin", "brows", "eyes", "lips", "mouth_interior")]


def figure_measures(segmentation: np.ndarray) -> tuple[int, float]:
    """Background pixels the figure encloses (a hole between mask and head, or under the chin: 0
    on a whole head), and the share of the face's outline that meets head or hair rather than
    background (the rest is the face's own silhouette: a profile, a turned cheek)."""
    from scipy import ndimage

    figure = segmentation != CLASS_ID["background"]
    enclosed = int((ndimage.binary_fill_holes(figure) & ~figure).sum())
    face = np.isin(segmentation, FACE_CLASSES)
    outline = ndimage.binary_dilation(face) & ~face
    head = np.isin(segmentation[outline], [CLASS_ID["head"], CLASS_ID["hair"]])
    return enclosed, float(head.mean()) if head.size else 0.0


HIDDEN_ON_SURFACE_ALLOWANCE = (10, 0.25)
"""Hidden landmarks an image may show on the depth surface at their own depth: at a silhouette a
pixel can; more than max(10, a quarter of the hidden ones) means the visibility is wrong."""
ON_SURFACE_TOLERANCE = 0.0025
"""Relative depth within which a landmark is on the surface. Visible landmarks sit a median 0.07%
off the depth of their pixel; a lip or a lid hiding an inner-lip or lid landmark is 0.4-1% in front."""


def _hidden_on_surface_excess(depth: np.ndarray, points: np.ndarray, visible: np.ndarray, z: np.ndarray,
                              resolution: int) -> float:
    """How many hidden landmarks inside the image sit on the depth pass at their own depth (within
    ON_SURFACE_TOLERANCE), beyond HIDDEN_ON_SURFACE_ALLOWANCE (≤ 0 is consistent)."""
    inside = ~visible & (points >= 0).all(axis=-1) & (points < resolution).all(axis=-1) & (z > 0)
    cells = np.floor(points[inside]).astype(int)
    there = depth[cells[:, 1], cells[:, 0]]
    on_surface = int((np.abs(there - z[inside]) < ON_SURFACE_TOLERANCE * z[inside]).sum())
    count, share = HIDDEN_ON_SURFACE_ALLOWANCE
    return on_surface - max(count, share * int(inside.sum()))


def label_summary(index: pd.DataFrame, measurements: pd.DataFrame) -> dict:
    """Distributions a data-set user looks at first."""
    total = measurements[[f"pixels_{name}" for name in SEGMENTATION_CLASSES]].to_numpy().sum(axis=0)

    def spread(column: pd.Series) -> dict:
        return {"min": round(float(column.min()), 2), "mean": round(float(column.mean()), 2),
                "max": round(float(column.max()), 2)}

    return {
        "images": int(len(index)),
        "identities": int(index["identity"].nunique()),
        "splits": {split: int(n) for split, n in Counter(index["split"]).items()},
        "emotions": {str(name): int(n) for name, n in Counter(index["emotion"].fillna("none")).items()},
        "yaw_deg": spread(index["yaw_deg"]),
        "pitch_deg": spread(index["pitch_deg"]),
        "visible_landmarks": spread(index["visible_landmarks"]),
        "head_border_share": spread(measurements["head_border_share"]),
        "class_share": {name: round(float(total[k] / max(total.sum(), 1)), 4)
                        for k, name in enumerate(SEGMENTATION_CLASSES)},
    }


OUTER_EYE_CORNERS = (33, 263)
"""MediaPipe landmarks whose 2D distance is the inter-ocular distance errors are divided by."""


def landmark_agreement(store: SyntheticStore, index: pd.DataFrame, max_abs_yaw: float) -> pd.DataFrame:
    """MediaPipe run on every indexed image with |yaw| <= max_abs_yaw: per image, whether a face
    was found and the mean distance of its landmarks from the visible ground-truth landmarks,
    over the ground truth's 2D inter-ocular distance (NaN where no face was found)."""
    from tasks.reconstruct.landmarks import detect_faces

    labels = store.labels()
    chosen = index[index["yaw_deg"].abs() <= max_abs_yaw]
    found, errors = [], []
    for sample, image in zip(chosen["sample"], chosen["image"]):
        faces = detect_faces(store.read_image(image), max_faces=1)
        truth = labels["landmarks_2d"][int(sample)]
        visible = labels["visible"][int(sample)]
        found.append(bool(faces))
        if faces:
            distance = np.linalg.norm(faces[0][:, :2] - truth, axis=1)[visible].mean()
            errors.append(float(distance / np.linalg.norm(truth[OUTER_EYE_CORNERS[0]] - truth[OUTER_EYE_CORNERS[1]])))
        else:
            errors.append(float("nan"))
    return pd.DataFrame({"sample": chosen["sample"].to_numpy(), "yaw_deg": chosen["yaw_deg"].to_numpy(),
                         "face_found": found, "error_iod": errors})
