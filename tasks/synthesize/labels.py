"""Labels from the scene Blender rendered: camera matrices in the OpenCV convention, landmark
projections, the head's angles against the camera, and the face-part class of every rig triangle
(the material index Blender's segmentation pass reports).

Pixel coordinates are continuous: the top-left pixel spans [0, 1)², so its centre is (0.5, 0.5),
as in MediaPipe's normalised landmarks times the image size. Camera coordinates are OpenCV's:
x right, y down, z forward, in world units (one unit is the portrait crop's side)."""

from __future__ import annotations

import numpy as np

from tasks.reconstruct.eyes import EYEBALL_PARTS
from tasks.reconstruct.mouth import MOUTH_PARTS, inside_polygon
from tasks.reconstruct.topology import N_LANDMARKS, N_MESH_POINTS, face_topology

SEGMENTATION_CLASSES: tuple[str, ...] = ("background", "skin", "brows", "eyes", "lips", "mouth_interior", "head",
                                         "hair")
"""Class id = position. `skin` is the face mask's, `head` the skin of the head behind it; `eyes` is
the eyeballs and irises (the lids are skin)."""
CLASS_ID = {name: i for i, name in enumerate(SEGMENTATION_CLASSES)}
SENSOR_WIDTH_MM = 36.0
_BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0])  # a Blender camera looks down -Z with +Y up


def intrinsics(lens_mm: np.ndarray | float, resolution: int, sensor_mm: float = SENSOR_WIDTH_MM) -> np.ndarray:
    """(..., 3, 3) pinhole matrices of a square image with a horizontal sensor fit and no shift."""
    focal = np.asarray(lens_mm, dtype=np.float64) / sensor_mm * resolution
    matrix = np.zeros(focal.shape + (3, 3))
    matrix[..., 0, 0] = matrix[..., 1, 1] = focal
    matrix[..., 0, 2] = matrix[..., 1, 2] = resolution / 2.0
    matrix[..., 2, 2] = 1.0
    return matrix


def extrinsics(camera_world: np.ndarray) -> np.ndarray:
    """(..., 3, 4) world → OpenCV camera [R | t] from Blender camera-to-world matrices (..., 4, 4)."""
    rotation_world = np.asarray(camera_world, dtype=np.float64)[..., :3, :3]
    centre = np.asarray(camera_world, dtype=np.float64)[..., :3, 3]
    rotation = _BLENDER_TO_OPENCV @ np.swapaxes(rotation_world, -1, -2)
    translation = -(rotation @ centre[..., None])[..., 0]
    return np.concatenate([rotation, translation[..., None]], axis=-1)


def to_camera(points_world: np.ndarray, world_to_camera: np.ndarray) -> np.ndarray:
    """(..., P, 3) world points in camera coordinates, one [R | t] per leading index."""
    rotation, translation = world_to_camera[..., :3, :3], world_to_camera[..., :3, 3]
    return np.einsum("...ij,...pj->...pi", rotation, points_world) + translation[..., None, :]


def project(points_camera: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
    """(..., P, 2) pixel coordinates of camera-space points (z > 0)."""
    homogeneous = np.einsum("...ij,...pj->...pi", camera_matrix, points_camera)
    return homogeneous[..., :2] / homogeneous[..., 2:3]


def euler_xyz(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Rotation of Blender's XYZ Euler (R = Rz Ry Rx), as the head pose is keyed."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def head_angles_to_camera(head_rotation: np.ndarray, world_to_camera: np.ndarray) -> np.ndarray:
    """(..., 2) yaw and pitch in degrees of the face's forward axis (world +z at rest) against the
    line of sight: (0, 0) faces the camera; yaw > 0 turns the face toward image right, pitch > 0 up."""
    forward = (world_to_camera[..., :3, :3] @ head_rotation @ np.array([0.0, 0.0, 1.0])[:, None])[..., 0]
    yaw = np.degrees(np.arctan2(forward[..., 0], -forward[..., 2]))
    pitch = np.degrees(np.arcsin(np.clip(-forward[..., 1], -1.0, 1.0)))
    return np.stack([yaw, pitch], axis=-1)


def triangle_classes(faces: np.ndarray, parts: np.ndarray, uv_canonical: np.ndarray) -> np.ndarray:
    """(F,) uint8 class id of every rig triangle: mouth-interior and eyeball parts by their vertices;
    face-surface triangles are lips inside the outer lip line, brows between a brow's two lines,
    else skin (judged by the centroid in the canonical UV layout)."""
    topology = face_topology()
    triangle_parts = parts[faces]
    classes = np.full(len(faces), CLASS_ID["skin"], dtype=np.uint8)
    surface = (faces < N_MESH_POINTS).all(axis=1)
    centroids = uv_canonical[faces].mean(axis=1)
    lips = np.concatenate([topology.lips_outer_upper, topology.lips_outer_lower[-2:0:-1]])
    classes[surface & inside_polygon(centroids, uv_canonical[lips])] = CLASS_ID["lips"]
    for eye in (topology.eye_left, topology.eye_right):
        brow = np.concatenate([eye.brow_upper, eye.brow_lower[::-1]])
        classes[surface & inside_polygon(centroids, uv_canonical[brow])] = CLASS_ID["brows"]
    eyes = np.isin(triangle_parts, list(EYEBALL_PARTS.values()) + ["iris"]).any(axis=1)
    eyes |= ((faces >= N_MESH_POINTS) & (faces < N_LANDMARKS)).any(axis=1)
    classes[eyes] = CLASS_ID["eyes"]
    classes[np.isin(triangle_parts, MOUTH_PARTS).any(axis=1)] = CLASS_ID["mouth_interior"]
    return classes
