"""Assemble a face rig from a square portrait crop, and the whole portrait → rig reconstruction.

World convention (shared with animate and render): on an S×S crop, a crop pixel (px, py) with
MediaPipe depth z_px (pixels, negative = toward the camera) sits at
x = (px - S/2)/S, y = (S/2 - py)/S, z = -z_px/S. The texture is the crop photo with a band of
mouth colours B = S // band_fraction rows high underneath; a crop pixel maps to
uv = (px/S, 1 - py/(S+B)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from tasks.common.errors import AvatarInputError
from tasks.reconstruct.blendshapes import blendshape_deltas, head_pivot
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.crop import crop_and_resize, square_crop_box
from tasks.reconstruct.face_frame import face_frame
from tasks.reconstruct.landmarks import detect_faces
from tasks.reconstruct.eyes import build_eyeballs
from tasks.reconstruct.mouth import (build_mouth_interior, fill_photo_mouth, inside_polygon, mouth_colours,
                                     paint_patches, paste_photo_teeth, photo_teeth_colour, rest_closing_offset)
from tasks.reconstruct.topology import N_LANDMARKS, N_MESH_POINTS, face_topology
from tasks.reconstruct.unwrap import unwrap_to_canonical

CANONICAL_MOUTH_RECT = (0.005, 0.005, 0.095, 0.095)
"""(u0, v0, u1, v1) of the mouth-colour patches in canonical UV space: a corner no face
triangle reaches."""

MIN_PORTRAIT_SIDE = 64
"""Shorter portrait side, in pixels, below which no face can be reconstructed."""


@dataclass(frozen=True)
class FaceRig:
    """A textured face mesh with ARKit blendshapes, in the world convention of this module."""

    vertices: np.ndarray
    """(V, 3) float32 world coordinates at rest: the 478 landmarks in MediaPipe order (an open-mouth
    photo's lips closed by `rest_offset`), then the mouth interior, then the eyeballs."""

    faces: np.ndarray
    """(F, 3) int32 triangles, counter-clockwise seen from the camera (+z) on the face surface."""

    uv_photo: np.ndarray
    """(V, 2) float32 UVs into `texture` (v = 0 at its bottom row)."""

    uv_canonical: np.ndarray
    """(V, 2) float32 UVs into `canonical_texture`, in [0, 1]."""

    parts: np.ndarray
    """(V,) labels: "face" (0..467), "iris" (468..477), then mouth.MOUTH_PARTS, then eyes.EYE_PARTS."""

    deltas: np.ndarray
    """(52, V, 3) float32 world-unit blendshape offsets in ARKIT_NAMES order."""

    pivot: np.ndarray
    """(3,) float32 head rotation centre in world units."""

    texture: np.ndarray
    """(S+B, S, 3) uint8: the crop photo on rows 0..S-1, the mouth-colour band below."""

    canonical_texture: np.ndarray
    """(T, T, 3) uint8: the photo unwrapped into the canonical UV layout, mouth colours in a corner."""

    landmarks_px: np.ndarray
    """(478, 3) float32 landmarks on the crop, pixels (x, y, z on the x scale)."""

    crop_box: tuple[int, int, int]
    """(x0, y0, side) of the square crop in the original portrait's pixels."""

    n_faces_found: int
    """Faces MediaPipe found in the portrait (the largest one was used)."""

    rest_offset: np.ndarray | None = None
    """(478, 3) float32 world offsets from the photo's landmarks to the rest pose: zeros for a
    closed mouth, the lip closing of an open-mouth photo otherwise."""

    def arrays(self) -> dict[str, np.ndarray]:
        """The rig arrays render reads (npz keys)."""
        return {"vertices": self.vertices, "faces": self.faces, "uv_photo": self.uv_photo,
                "uv_canonical": self.uv_canonical, "deltas": self.deltas, "pivot": self.pivot}


def landmarks_to_world(landmarks_px: np.ndarray, size: int) -> np.ndarray:
    """Crop-pixel landmarks (x, y, z) → world coordinates, (N, 3) float64."""
    points = np.asarray(landmarks_px, np.float64)
    return np.stack([(points[:, 0] - size / 2) / size, (size / 2 - points[:, 1]) / size,
                     -points[:, 2] / size], axis=1)


def _sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Nearest-pixel colours at continuous pixel positions."""
    cols = np.clip(np.floor(xy[:, 0]).astype(int), 0, image.shape[1] - 1)
    rows = np.clip(np.floor(xy[:, 1]).astype(int), 0, image.shape[0] - 1)
    return image[rows, cols].astype(np.float64)


def _photo_colours(crop: np.ndarray, landmarks_px: np.ndarray):
    """Mean lip colour (between the outer and inner lip edges) and median face luma."""
    topology = face_topology()
    lip_points = []
    for outer, inner in ((topology.lips_outer_upper, topology.lips_inner_upper),
                         (topology.lips_outer_lower, topology.lips_inner_lower)):
        lip_points.append((landmarks_px[outer[1:-1], :2] + landmarks_px[inner[1:-1], :2]) / 2)
    lip_rgb = _sample(crop, np.concatenate(lip_points)).mean(axis=0)
    skin = _sample(crop, landmarks_px[:N_MESH_POINTS, :2])
    face_luma = float(np.median(skin @ np.array([0.299, 0.587, 0.114])))
    return lip_rgb, face_luma


def _photo_sclera(crop: np.ndarray, landmarks_px: np.ndarray, face_luma: float) -> np.ndarray | None:
    """The photo's white of the eye: the brighter quarter of both eye openings outside the irises,
    kept at least as bright as the skin (small or shaded eyes show more lid than white)."""
    topology = face_topology()
    whites = []
    for eye in (topology.eye_left, topology.eye_right):
        contour = landmarks_px[eye.loop, :2].astype(np.float64)
        iris = landmarks_px[eye.iris, :2].astype(np.float64)
        iris_radius = np.linalg.norm(iris[1:] - iris[0], axis=1).mean()
        low = np.clip(np.floor(contour.min(axis=0)).astype(int), 0, None)
        high = np.minimum(np.ceil(contour.max(axis=0)).astype(int) + 1, [crop.shape[1], crop.shape[0]])
        cols, rows = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]))
        centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
        white = inside_polygon(centres, contour) & (np.linalg.norm(centres - iris[0], axis=1) > 1.1 * iris_radius)
        candidates = crop[rows.ravel()[white], cols.ravel()[white]].astype(np.float64)
        if len(candidates) >= 4:
            luma = candidates @ np.array([0.299, 0.587, 0.114])
            whites.append(candidates[luma >= np.quantile(luma, 0.75)])
    if not whites:
        return None
    white = np.median(np.concatenate(whites), axis=0)
    # Less saturated than the photo's shaded white, and no darker than the skin.
    white = 0.6 * white + 0.4 * white.mean()
    luma = float(white @ np.array([0.299, 0.587, 0.114]))
    return np.clip(white * max(1.0, face_luma / max(luma, 1.0)), 0, 255)


def _photo_lid(crop: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
    """Skin colour of a closed upper lid: the skin on a ring around each eye, the darker shadows
    left out (the crease of deep-set eyes is dark and would read as an open eye)."""
    topology = face_topology()
    samples = []
    for eye in (topology.eye_left, topology.eye_right):
        contour = landmarks_px[eye.loop, :2].astype(np.float64)
        centre = contour.mean(axis=0)
        for scale in (1.5, 1.8):
            samples.append(_sample(crop, centre + scale * (contour - centre) * [1.0, 2.0]))
    samples = np.concatenate(samples)
    luma = samples @ np.array([0.299, 0.587, 0.114])
    return np.median(samples[luma >= np.quantile(luma, 0.25)], axis=0)


def build_face_rig(crop_image: np.ndarray, landmarks_px: np.ndarray,
                   config: ReconstructConfig = ReconstructConfig(),
                   shape_offset_px: np.ndarray | None = None) -> FaceRig:
    """A face rig from an S×S×3 uint8 crop and its (478, 3) MediaPipe landmarks in crop pixels.
    `shape_offset_px` (478, 3) moves the mesh's landmarks, not the texture's: the photo stays on
    the features while the face takes another shape."""
    if crop_image.ndim != 3 or crop_image.shape[0] != crop_image.shape[1] or crop_image.shape[2] != 3:
        raise ValueError(f"build_face_rig needs a square S×S×3 crop, got {crop_image.shape}")
    landmarks_px = np.asarray(landmarks_px, np.float32)
    if landmarks_px.shape != (N_LANDMARKS, 3):
        raise ValueError(f"build_face_rig needs (478, 3) landmarks, got {landmarks_px.shape}")
    size = crop_image.shape[0]
    band = size // config.band_fraction
    topology = face_topology()

    shaped_px = landmarks_px if shape_offset_px is None else landmarks_px + np.asarray(shape_offset_px, np.float32)
    photo_world = landmarks_to_world(shaped_px, size)
    # An open-mouth photo rests with its lips closed; the photo texture stays on them (UVs below).
    rest_offset = rest_closing_offset(photo_world, config)
    world = photo_world + rest_offset
    frame = face_frame(world)
    band_rect = (0.0, 0.0, 1.0, band / (size + band))
    mouth = build_mouth_interior(world, frame, config, band_rect, CANONICAL_MOUTH_RECT)
    uv_landmarks = np.stack([landmarks_px[:, 0] / size, 1.0 - landmarks_px[:, 1] / (size + band)], axis=1)

    unwrap_faces = np.concatenate([topology.faces, topology.eye_fill_faces]) if config.fill_eye_holes \
        else topology.faces
    extra = [mouth]
    if config.eyeballs:
        # Open eye holes with eyeballs behind them (the flat lid fill would hide them).
        face_faces = topology.faces
        extra.append(build_eyeballs(world, uv_landmarks, config, band_rect, CANONICAL_MOUTH_RECT,
                                    N_LANDMARKS + len(mouth.vertices)))
    else:
        face_faces = unwrap_faces
    vertices = np.concatenate([world] + [part.vertices for part in extra]).astype(np.float32)
    faces = np.concatenate([face_faces] + [part.faces for part in extra]).astype(np.int32)
    uv_photo = np.concatenate([uv_landmarks] + [part.uv_photo for part in extra]).astype(np.float32)
    uv_canonical = np.concatenate([topology.uv_canonical] + [part.uv_canonical for part in extra]).astype(np.float32)
    parts = np.concatenate([np.full(N_MESH_POINTS, "face"), np.full(N_LANDMARKS - N_MESH_POINTS, "iris")]
                           + [part.parts for part in extra]).astype("<U12")

    lip_rgb, face_luma = _photo_colours(crop_image, landmarks_px)
    colours = mouth_colours(lip_rgb, face_luma, photo_teeth_colour(crop_image, landmarks_px, face_luma),
                            _photo_sclera(crop_image, landmarks_px, face_luma), _photo_lid(crop_image, landmarks_px))
    texture = np.zeros((size + band, size, 3), np.uint8)
    # An open mouth rests closed: its teeth and dark inside must not stay on the lips' rim.
    texture[:size] = fill_photo_mouth(crop_image, landmarks_px, lip_rgb) if np.abs(rest_offset).max() > 0 \
        else crop_image
    paint_patches(texture, (0, size, size, size + band), colours)
    if np.abs(rest_offset).max() > 0:  # the photo's mouth is open: it may show its own teeth
        paste_photo_teeth(texture, (0, size, size, size + band), crop_image, landmarks_px, colours)

    canonical_size = config.canonical_texture_size
    canonical = unwrap_to_canonical(crop_image, landmarks_px, unwrap_faces, topology.uv_canonical, canonical_size)
    u0, v0, u1, v1 = CANONICAL_MOUTH_RECT
    paint_patches(canonical, (int(round(u0 * canonical_size)), int(round((1 - v1) * canonical_size)),
                              int(round(u1 * canonical_size)), int(round((1 - v0) * canonical_size))), colours)

    return FaceRig(
        vertices=vertices, faces=faces, uv_photo=uv_photo, uv_canonical=uv_canonical, parts=parts,
        deltas=blendshape_deltas(vertices, parts, config), pivot=head_pivot(world),
        texture=texture, canonical_texture=canonical, landmarks_px=landmarks_px,
        crop_box=(0, 0, size), n_faces_found=1, rest_offset=rest_offset.astype(np.float32))


def reconstruct(image_rgb: np.ndarray, resolution: int = 512,
                config: ReconstructConfig = ReconstructConfig(),
                shape_offset: Callable[[np.ndarray], np.ndarray] | None = None) -> FaceRig:
    """Portrait (H×W×3 uint8 RGB) → face rig on a resolution×resolution crop of its largest face;
    `shape_offset` maps the crop's landmarks to `build_face_rig`'s shape_offset_px.

    Raises AvatarInputError when the portrait holds no face or is too small.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"reconstruct needs an H×W×3 uint8 image, got {image_rgb.shape} {image_rgb.dtype}")
    height, width = image_rgb.shape[:2]
    if min(height, width) < MIN_PORTRAIT_SIDE:
        raise AvatarInputError(f"the portrait is {width}x{height} pixels; at least "
                               f"{MIN_PORTRAIT_SIDE}x{MIN_PORTRAIT_SIDE} is needed to find a face")

    # 1. Find faces on the whole portrait (downscaled when huge) and take the largest.
    scale = min(1.0, config.detection_max_side / max(height, width))
    detection_image = image_rgb
    if scale < 1.0:
        detection_image = np.asarray(Image.fromarray(image_rgb).resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR))
    faces = detect_faces(detection_image, config.max_faces, config.min_detection_confidence)
    if not faces:
        raise AvatarInputError("no face found in the portrait")
    largest = faces[0].astype(np.float64) / scale

    # 2. Square crop around it, resized to the rig resolution.
    box = square_crop_box(largest, (height, width), config.crop_scale)
    crop = crop_and_resize(image_rgb, box, resolution)

    # 3. Detect again on the crop so the landmarks match its pixels exactly; fall back to the
    #    first detection mapped into the crop if the crop's detection misses.
    x0, y0, side = box
    mapped = np.stack([(largest[:, 0] - x0) * resolution / side, (largest[:, 1] - y0) * resolution / side,
                       largest[:, 2] * resolution / side], axis=1).astype(np.float32)
    on_crop = detect_faces(crop, config.max_faces, config.min_detection_confidence)
    landmarks = mapped
    if on_crop:
        centres = np.array([f[:, :2].mean(axis=0) for f in on_crop])
        nearest = int(np.argmin(np.linalg.norm(centres - mapped[:, :2].mean(axis=0), axis=1)))
        landmarks = on_crop[nearest]

    # 4. The rig.
    rig = build_face_rig(crop, landmarks, config, None if shape_offset is None else shape_offset(landmarks))
    return replace(rig, crop_box=(int(x0), int(y0), int(side)), n_faces_found=len(faces))
