"""Procedural ARKit blendshapes on the MediaPipe topology plus the mouth interior.

Every delta is built in the face frame (eye line, chin → forehead; face_frame.py) and sized by
the inter-ocular distance or the mouth width, so it fits any face size and a tilted head.
Regions (lips, jaw, lids, brows) come from MediaPipe's published landmark groups and from the
canonical UV layout, which is the same for every face. "Left" is the subject's left, as in
ARKit: larger x in the photo.

Shapes with real geometry: all eye, jaw, mouth, brow, cheek and nose shapes, and tongueOut.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tasks.common.arkit import ARKIT_NAMES, INDEX
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.eyes import (EYEBALL_PARTS, LID_PARTS, LID_ROW_REACH, LID_ROWS, eyeball_centre, gaze_angles,
                                    rotate_eye)
from tasks.reconstruct.face_frame import FaceFrame, face_frame
from tasks.reconstruct.topology import (CHIN_BOTTOM, MOUTH_CORNERS_INNER, MOUTH_CORNERS_OUTER, N_LANDMARKS,
                                        N_MESH_POINTS, EyeRegion, face_topology)

# Jaw hinge and head centre in the face frame, in inter-ocular distances: the hinge sits in front
# of the ear at about the level of the face oval's widest points, the head centre further back.
JAW_HINGE_LOCAL = (0.0, -0.4, -1.0)
HEAD_PIVOT_LOCAL = (0.0, -0.8, -1.3)


def _smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / np.maximum(edge1 - edge0, 1e-9), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of 2D points against a closed polygon."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / np.where(y1 == y0, 1e-12, y1 - y0) + x0)
    return crosses.sum(axis=1) % 2 == 1


@lru_cache(maxsize=1)
def _landmark_regions() -> dict[str, np.ndarray]:
    """Per-landmark weights that depend only on the topology (computed in canonical UV space)."""
    topology = face_topology()
    uv = topology.uv_canonical[:N_MESH_POINTS].astype(np.float64)
    eye_l, eye_r = uv[topology.eye_left.loop].mean(axis=0), uv[topology.eye_right.loop].mean(axis=0)
    iod_uv = np.linalg.norm(eye_l - eye_r)
    corners = uv[list(MOUTH_CORNERS_INNER)]
    mouth_v, mouth_u = corners[:, 1].mean(), corners[:, 0].mean()

    outer_loop = np.concatenate([topology.lips_outer_upper, topology.lips_outer_lower[-2:0:-1]])
    inner_loop = topology.lips_inner_loop
    in_lips = _inside_polygon(uv, uv[outer_loop]) & ~_inside_polygon(uv, uv[inner_loop])
    in_lips[outer_loop] = True
    in_lips[inner_loop] = True
    hole_centre_v = uv[inner_loop, 1].mean()
    hole_half_height = (uv[inner_loop, 1].max() - uv[inner_loop, 1].min()) / 2

    # 1 on the lower lip, 0 on the upper lip, a blend at the corners.
    lower_lip = np.clip(0.5 - (uv[:, 1] - hole_centre_v) / hole_half_height, 0.0, 1.0) * in_lips
    upper_lip = np.clip(0.5 + (uv[:, 1] - hole_centre_v) / hole_half_height, 0.0, 1.0) * in_lips
    lower_lip[topology.lips_inner_lower[1:-1]] = 1.0
    upper_lip[topology.lips_inner_lower[1:-1]] = 0.0
    upper_lip[topology.lips_inner_upper[1:-1]] = 1.0
    lower_lip[topology.lips_inner_upper[1:-1]] = 0.0
    for corner in list(MOUTH_CORNERS_INNER) + list(MOUTH_CORNERS_OUTER):
        lower_lip[corner] = upper_lip[corner] = 0.5

    # Jaw weight: 1 below the mouth near the midline, ramping in slowly toward the cheeks and ears.
    below = (mouth_v - uv[:, 1]) / iod_uv
    lateral = _smoothstep(0.35, 1.0, np.abs(uv[:, 0] - mouth_u) / iod_uv)
    jaw = _smoothstep(-0.02 - 0.15 * lateral, 0.12 + 0.6 * lateral, below)
    jaw = np.where(in_lips, lower_lip, jaw)
    return {"jaw": jaw, "lower_lip": lower_lip, "upper_lip": upper_lip, "in_lips": in_lips.astype(np.float64)}


def _falloff(distance_over_radius: np.ndarray) -> np.ndarray:
    """Gaussian falloff cut to exactly zero beyond three radii, so far regions stay untouched."""
    return np.where(distance_over_radius < 3.0, np.exp(-distance_over_radius ** 2), 0.0)


def _spread(local: np.ndarray, handles: np.ndarray, handle_deltas: np.ndarray, radius: float,
            anchors: np.ndarray | None = None) -> np.ndarray:
    """Deltas for the face landmarks: handles move exactly, anchors stay, others follow their
    nearest handles (inverse-distance weights) with a Gaussian falloff of `radius`."""
    points = local[:N_LANDMARKS]
    anchors = np.array([], int) if anchors is None else np.setdiff1d(anchors, handles)
    sources = np.concatenate([handles, anchors]).astype(int)
    source_deltas = np.concatenate([handle_deltas, np.zeros((len(anchors), 3))])
    distance = np.linalg.norm(points[:, None, :] - points[sources][None], axis=2)
    weights = 1.0 / (distance ** 2 + (0.05 * radius) ** 2)
    blended = (weights @ source_deltas) / weights.sum(axis=1, keepdims=True)
    nearest = distance[:, :len(handles)].min(axis=1)
    deltas = blended * _falloff(nearest / radius)[:, None]
    deltas[handles] = handle_deltas
    return deltas


def _brush(local: np.ndarray, centre: np.ndarray, radius: float, delta: np.ndarray) -> np.ndarray:
    """Gaussian brush on the landmarks, by distance in the face plane."""
    points = local[:N_LANDMARKS]
    falloff = _falloff(np.linalg.norm(points[:, :2] - centre[:2], axis=1) / radius)
    return falloff[:, None] * np.asarray(delta, np.float64)[None]


class _ShapeBuilder:
    """Holds one face's frame-space geometry and writes shapes into a (52, V, 3) array."""

    def __init__(self, vertices: np.ndarray, parts: np.ndarray, config: ReconstructConfig):
        self.frame: FaceFrame = face_frame(vertices[:N_LANDMARKS])
        self.local = self.frame.to_local(np.asarray(vertices, np.float64))
        self.parts = np.asarray(parts)
        self.config = config
        self.topology = face_topology()
        self.regions = _landmark_regions()
        self.iod = self.frame.inter_ocular
        self.width = float(np.clip(self.frame.mouth_width, 0.6 * self.iod, 1.3 * self.iod))
        self.deltas = np.zeros((len(ARKIT_NAMES), len(vertices), 3), np.float64)
        corners = self.local[list(MOUTH_CORNERS_INNER)]
        self.mouth_centre = self.local[self.topology.lips_inner_loop].mean(axis=0)
        self.corner_right, self.corner_left = corners[0], corners[1]
        self.hinge = np.array(JAW_HINGE_LOCAL) * self.iod
        self.jaw_weight = self._jaw_weight()

    # -- helpers -----------------------------------------------------------------------------
    def _jaw_weight(self) -> np.ndarray:
        weight = np.zeros(len(self.local))
        weight[:N_MESH_POINTS] = self.regions["jaw"]
        lower_parts = np.isin(self.parts, ["cavity_lower", "teeth_lower", "tongue"])
        weight[lower_parts] = 1.0
        return weight

    def side_weight(self, side: str) -> np.ndarray:
        """Smooth 0→1 weight of the landmarks toward one side of the mouth."""
        x = (self.local[:N_LANDMARKS, 0] - self.mouth_centre[0]) / (0.5 * self.width)
        return _smoothstep(-0.3, 0.8, x if side == "Left" else -x)

    def eye(self, side: str) -> EyeRegion:
        return self.topology.eye_left if side == "Left" else self.topology.eye_right

    def set(self, name: str, landmark_deltas: np.ndarray, follow_mouth: bool = True) -> None:
        """Store a shape given in frame coordinates for the 478 landmarks; the cavity follows the lips."""
        full = np.zeros_like(self.local)
        full[:N_LANDMARKS] = landmark_deltas
        if follow_mouth:
            full += self._cavity_follow(full)
        self.deltas[INDEX[name]] = full

    def _cavity_follow(self, full: np.ndarray) -> np.ndarray:
        """Cavity vertices follow the inner-lip loop: exactly on its duplicate front ring, less deeper in.

        Each half of the cavity follows its own lip (both hang from the corners), weighted by
        horizontal distance, fading with depth behind the lips.
        """
        extra = np.zeros_like(full)
        loop = self.topology.lips_inner_loop
        loop_points = self.local[loop]
        n_upper = len(self.topology.lips_inner_upper)
        upper_half = np.arange(len(loop)) < n_upper
        lower_half = ~upper_half
        lower_half[[0, n_upper - 1]] = True
        depth_scale = max(self.config.mouth_depth * self.width, 1e-9)
        front_z = loop_points[:, 2].mean()
        for label, half in (("cavity_upper", upper_half), ("cavity_lower", lower_half)):
            members = np.flatnonzero(self.parts == label)
            if len(members) == 0:
                continue
            dx = self.local[members, 0][:, None] - loop_points[half, 0][None]
            weights = np.exp(-(dx / (0.12 * self.width)) ** 2) + 1e-12
            blended = (weights @ full[loop][half]) / weights.sum(axis=1, keepdims=True)
            depth = np.clip((front_z - self.local[members, 2]) / depth_scale, 0.0, 1.0)
            extra[members] = blended * (1.0 - 0.6 * depth)[:, None] - full[members]
        return extra + self._cavity_follow_fix(full + extra)

    def rotate_about_hinge(self, angle_per_weight: float, weight: np.ndarray) -> np.ndarray:
        """Deltas of rotating each vertex about the jaw hinge's x axis by angle × weight."""
        offset = self.local - self.hinge
        angle = angle_per_weight * weight
        cos, sin = np.cos(angle), np.sin(angle)
        rotated = offset.copy()
        rotated[:, 1] = offset[:, 1] * cos - offset[:, 2] * sin
        rotated[:, 2] = offset[:, 1] * sin + offset[:, 2] * cos
        return rotated - offset

    # -- shapes ------------------------------------------------------------------------------
    def jaw(self) -> None:
        angle = np.radians(self.config.jaw_open_degrees)
        self.deltas[INDEX["jawOpen"]] = self.rotate_about_hinge(angle, self.jaw_weight)
        # Ring 0 of the cavity duplicates the lip loop; it must move with it exactly.
        self.deltas[INDEX["jawOpen"]] += self._cavity_follow_fix(self.deltas[INDEX["jawOpen"]])
        for name, direction in (("jawLeft", (1.0, 0.0, 0.0)), ("jawRight", (-1.0, 0.0, 0.0)),
                                ("jawForward", (0.0, 0.0, 0.8))):
            shift = 0.12 * self.iod * np.array(direction)
            full = self.jaw_weight[:, None] * shift[None]
            full += self._cavity_follow_fix(full)
            self.deltas[INDEX[name]] = full

    def _cavity_follow_fix(self, full: np.ndarray) -> np.ndarray:
        """For shapes set on all vertices: make the cavity's front ring copy the lip loop exactly."""
        loop = self.topology.lips_inner_loop
        fix = np.zeros_like(full)
        cavity = np.flatnonzero(np.isin(self.parts, ["cavity_upper", "cavity_lower"]))
        if len(cavity) < len(loop):
            return fix
        # The first ring of cavity vertices duplicates the loop in loop order (mouth.py). Matching
        # by order, not by position, keeps each lip's twin even where closed lips coincide.
        front = cavity[:len(loop)]
        fix[front] = full[loop] - full[front]
        return fix

    def mouth_close(self) -> None:
        jaw_open = self.deltas[INDEX["jawOpen"]][:N_LANDMARKS]
        lower, upper = self.regions["lower_lip"], self.regions["upper_lip"]
        lips = self.local[:N_LANDMARKS]
        inner_lower = self.topology.lips_inner_lower
        # Each upper-lip point moves down by 40% of the jaw drop of the lower-lip point below it,
        # each lower-lip point gives back 60% of its own drop: they meet with jawOpen = 1.
        nearest = inner_lower[np.abs(lips[:, None, 0] - lips[None, inner_lower, 0]).argmin(axis=1)]
        deltas = np.zeros((N_LANDMARKS, 3))
        deltas[:N_MESH_POINTS] = (-0.6 * lower[:, None] * jaw_open[:N_MESH_POINTS]
                                  + 0.4 * upper[:, None] * jaw_open[nearest[:N_MESH_POINTS]])
        self.set("mouthClose", deltas)

    def mouth_corners(self) -> None:
        w = self.width
        across = (self.local[:N_LANDMARKS, 0] - self.mouth_centre[0]) / (0.5 * w)
        for side, sign in (("Left", 1.0), ("Right", -1.0)):
            corner = self.corner_left if side == "Left" else self.corner_right
            cheek = corner + np.array([sign * 0.35 * w, 0.45 * w, 0.0])
            # Corner shapes fade out toward the midline: a smile or a frown moves the corners against a lip
            # centre that stays put, instead of lifting or dropping the whole mouth with them.
            toward_corner = _smoothstep(0.0, 0.8, sign * across)[:, None]
            smile = _brush(self.local, corner, 0.45 * w, (sign * 0.10 * w, 0.11 * w, -0.04 * w)) * toward_corner
            smile += _brush(self.local, cheek, 0.4 * w, (sign * 0.02 * w, 0.05 * w, 0.02 * w))
            self.set(f"mouthSmile{side}", smile)
            self.set(f"mouthFrown{side}",
                     _brush(self.local, corner, 0.4 * w, (sign * 0.03 * w, -0.10 * w, 0.0)) * toward_corner)
            self.set(f"mouthStretch{side}",
                     _brush(self.local, corner, 0.45 * w, (sign * 0.12 * w, -0.03 * w, -0.02 * w)))
            self.set(f"mouthDimple{side}", _brush(self.local, corner, 0.3 * w, (sign * 0.04 * w, 0.0, -0.05 * w)))
            self.set(f"mouth{side}", _brush(self.local, self.mouth_centre, 0.8 * w, (sign * 0.12 * w, 0.0, 0.0)))

    def mouth_round(self) -> None:
        w = self.width
        points = self.local[:N_LANDMARKS]
        falloff = _falloff(np.linalg.norm(points[:, :2] - self.mouth_centre[:2], axis=1) / (0.7 * w))
        towards_centre = -(points[:, 0] - self.mouth_centre[0])
        pucker = np.stack([0.35 * towards_centre, np.zeros(len(points)), np.full(len(points), 0.12 * w)], axis=1)
        self.set("mouthPucker", pucker * falloff[:, None])
        lips = np.zeros(len(points))
        lips[:N_MESH_POINTS] = self.regions["upper_lip"] - self.regions["lower_lip"]
        across = np.clip((points[:, 0] - self.mouth_centre[0]) / (0.5 * w), -1.0, 1.0)
        opening = 0.07 * w * lips * (1 - across ** 2)
        funnel = np.stack([0.2 * towards_centre, opening, np.full(len(points), 0.10 * w)], axis=1)
        self.set("mouthFunnel", funnel * falloff[:, None])

    def _lip_line(self, arc: np.ndarray, x: np.ndarray) -> np.ndarray:
        points = self.local[arc]
        order = np.argsort(points[:, 0])
        return np.interp(x, points[order, 0], points[order, 1])

    def lip_rolls_and_presses(self) -> None:
        w = self.width
        points = self.local[:N_LANDMARKS]
        upper = np.zeros(N_LANDMARKS)
        lower = np.zeros(N_LANDMARKS)
        upper[:N_MESH_POINTS] = self.regions["upper_lip"]
        lower[:N_MESH_POINTS] = self.regions["lower_lip"]
        upper_line = self._lip_line(self.topology.lips_inner_upper, points[:, 0])
        lower_line = self._lip_line(self.topology.lips_inner_lower, points[:, 0])
        # Rolls: the lip turns inward, its outer edge slides toward the inner line and back.
        roll_lower = np.stack([np.zeros(N_LANDMARKS), 0.55 * (lower_line - points[:, 1]),
                               np.full(N_LANDMARKS, -0.05 * w)], axis=1) * lower[:, None]
        roll_upper = np.stack([np.zeros(N_LANDMARKS), 0.55 * (upper_line - points[:, 1]),
                               np.full(N_LANDMARKS, -0.05 * w)], axis=1) * upper[:, None]
        self.set("mouthRollLower", roll_lower)
        self.set("mouthRollUpper", roll_upper)
        chin = self.local[CHIN_BOTTOM]
        below_centre = (self.mouth_centre + chin) / 2
        jaw = self.jaw_weight[:N_LANDMARKS, None]
        self.set("mouthShrugLower", jaw * _brush(self.local, below_centre, 0.6 * w, (0.0, 0.07 * w, 0.03 * w)))
        above_centre = self.mouth_centre + np.array([0.0, 0.12 * w, 0.0])
        self.set("mouthShrugUpper", (1 - jaw) * _brush(self.local, above_centre, 0.45 * w, (0.0, 0.04 * w, 0.02 * w)))
        for side in ("Left", "Right"):
            side_weight = self.side_weight(side)[:, None]
            press = np.zeros((N_LANDMARKS, 3))
            press[:, 1] = (0.3 * (upper_line - points[:, 1]) - 0.015 * w) * upper
            press[:, 1] += (0.3 * (lower_line - points[:, 1]) + 0.015 * w) * lower
            press[:, 2] = -0.02 * w * (upper + lower)
            self.set(f"mouthPress{side}", press * side_weight)
            lower_down = np.zeros((N_LANDMARKS, 3))
            lower_down[:, 1] = -0.10 * w * lower
            lower_down += 0.5 * jaw * _brush(self.local, below_centre, 0.5 * w, (0.0, -0.06 * w, 0.0)) * (1 - lower[:, None])
            self.set(f"mouthLowerDown{side}", lower_down * side_weight)
            upper_up = np.zeros((N_LANDMARKS, 3))
            upper_up[:, 1] = 0.08 * w * upper
            upper_up += (1 - jaw) * _brush(self.local, above_centre, 0.5 * w, (0.0, 0.04 * w, 0.0)) * (1 - upper[:, None])
            self.set(f"mouthUpperUp{side}", upper_up * side_weight)

    def eyes(self) -> None:
        for side in ("Left", "Right"):
            eye = self.eye(side)
            upper, lower = eye.upper[1:-1], eye.lower[1:-1]
            gap = self.local[upper] - self.local[lower]
            lid_handles = np.concatenate([eye.upper, eye.lower])
            radius = 0.22 * self.iod
            # The upper lid does most of a blink; the lower lid rises a little.
            blink_meet = self.local[lower] + 0.1 * gap
            handle_deltas = np.concatenate([[np.zeros(3)], blink_meet - self.local[upper], [np.zeros(3)],
                                            [np.zeros(3)], blink_meet - self.local[lower], [np.zeros(3)]])
            self.set(f"eyeBlink{side}", _spread(self.local, lid_handles, handle_deltas, radius), follow_mouth=False)
            # The eyeball backs away as the lids close, so the closed lids always cover it.
            blink = self.deltas[INDEX[f"eyeBlink{side}"]]
            eyeball = np.flatnonzero(self.parts == EYEBALL_PARTS[side])
            blink[eyeball, 2] = -0.25 * self.iod
            # The closing lid unfolds from above the lid crease (covering its shadow) down to
            # where the lids meet.
            lid = np.flatnonzero(self.parts == LID_PARTS[side])
            if len(lid):
                rows = lid.reshape(LID_ROWS, len(eye.upper))
                brow = self.local[eye.brow_lower]
                distance = np.linalg.norm(self.local[upper][:, None, :2] - brow[None, :, :2], axis=2)
                nearest = brow[distance.argmin(axis=1)]
                top, bottom = np.zeros((len(eye.upper), 3)), np.zeros((len(eye.upper), 3))
                # The brow ridge stands in front of the lid: the lid's top edge comes forward with it.
                top[1:-1] = 0.6 * (nearest - self.local[upper])
                top[1:-1, 2] = np.maximum(nearest[:, 2] - self.local[upper][:, 2], 0.0) + 0.03 * self.iod
                bottom[1:-1] = blink_meet - self.local[upper]
                bottom[1:-1, 2] += 0.03 * self.iod
                for row, f in enumerate(LID_ROW_REACH):
                    blink[rows[row]] = (1 - f) * top + f * bottom

            zeros = np.zeros((1, 3))
            squint = np.concatenate([zeros, -0.12 * gap, zeros, zeros, 0.30 * gap, zeros])
            squint_deltas = _spread(self.local, lid_handles, squint, radius)
            squint_deltas += _brush(self.local, self.local[eye.lower].mean(axis=0) - np.array([0, 0.3 * self.iod, 0]),
                                    0.25 * self.iod, (0.0, 0.03 * self.iod, 0.01 * self.iod))
            self.set(f"eyeSquint{side}", squint_deltas, follow_mouth=False)

            wide = np.concatenate([zeros, 0.35 * gap, zeros, zeros, -0.08 * gap, zeros])
            self.set(f"eyeWide{side}", _spread(self.local, lid_handles, wide, radius), follow_mouth=False)

            # Gaze turns the eyeball (and the iris landmarks) about its centre; looking up or
            # down also moves the upper lid.
            turning = np.concatenate([eye.iris, np.flatnonzero(self.parts == EYEBALL_PARTS[side])])
            centre = self.frame.to_local(eyeball_centre(self.frame.to_world(self.local[:N_LANDMARKS]), eye,
                                                        self.config))
            for name in ("In", "Out", "Up", "Down"):
                yaw, pitch = gaze_angles({f"eyeLook{name}{side}": 1.0}, side, self.config)
                deltas = np.zeros((N_LANDMARKS, 3))
                if name in ("Up", "Down"):
                    # The upper lid rides on the turning eye, covering the photo's lash line
                    # that the eyeball's front carries with it.
                    lid = np.concatenate([zeros, (0.3 if name == "Up" else -0.55) * gap, zeros,
                                          np.zeros((len(eye.lower), 3))])
                    deltas += _spread(self.local, lid_handles, lid, radius)
                self.set(f"eyeLook{name}{side}", deltas, follow_mouth=False)
                shape = self.deltas[INDEX[f"eyeLook{name}{side}"]]
                shape[turning] = rotate_eye(self.local[turning], centre, yaw, pitch) - self.local[turning]

    def brows(self) -> None:
        inner_up = np.zeros((N_LANDMARKS, 3))
        for side in ("Left", "Right"):
            eye = self.eye(side)
            brow = np.concatenate([eye.brow_upper, eye.brow_lower])
            along = np.concatenate([np.linspace(0, 1, len(eye.brow_upper)), np.linspace(0, 1, len(eye.brow_lower))])
            towards_nose = -1.0 if side == "Left" else 1.0
            anchors = eye.lower
            radius = 0.3 * self.iod

            lift = np.zeros((len(brow), 3))
            lift[:, 1] = 0.12 * self.iod * (1 - along) ** 1.5
            inner_up += _spread(self.local, brow, lift, radius, anchors)

            down = np.zeros((len(brow), 3))
            down[:, 1] = -0.08 * self.iod
            down[:, 0] = towards_nose * 0.03 * self.iod * (1 - along)
            self.set(f"browDown{side}", _spread(self.local, brow, down, radius, anchors), follow_mouth=False)

            outer = np.zeros((len(brow), 3))
            outer[:, 1] = 0.10 * self.iod * along ** 1.5
            self.set(f"browOuterUp{side}", _spread(self.local, brow, outer, radius, anchors), follow_mouth=False)
        self.set("browInnerUp", inner_up, follow_mouth=False)

    def cheeks_and_nose(self) -> None:
        from mediapipe.python.solutions import face_mesh_connections as connections  # heavy: imported on first use

        w, iod = self.width, self.iod
        puff = np.zeros((N_LANDMARKS, 3))
        nose_points = np.array(sorted({v for e in connections.FACEMESH_NOSE for v in e}))
        nose_x = self.local[nose_points, 0]
        for side, sign in (("Left", 1.0), ("Right", -1.0)):
            corner = self.corner_left if side == "Left" else self.corner_right
            cheek_centre = corner + np.array([sign * 0.45 * w, 0.25 * w, 0.0])
            puff += _brush(self.local, cheek_centre, 0.5 * w, (sign * 0.07 * iod, 0.0, 0.05 * iod))
            eye = self.eye(side)
            under_eye = self.local[eye.lower].mean(axis=0) - np.array([0.0, 0.35 * iod, 0.0])
            squint = _brush(self.local, under_eye, 0.3 * iod, (0.0, 0.05 * iod, 0.015 * iod))
            gap = self.local[eye.upper[1:-1]] - self.local[eye.lower[1:-1]]
            zeros = np.zeros((1, 3))
            lid = np.concatenate([np.zeros((len(eye.upper), 3)), zeros, 0.12 * gap, zeros])
            squint += _spread(self.local, np.concatenate([eye.upper, eye.lower]), lid, 0.2 * iod)
            self.set(f"cheekSquint{side}", squint, follow_mouth=False)
            # The nose wing: the nose-group landmark furthest to this side.
            wing = nose_points[np.argmax(sign * nose_x)]
            sneer = _brush(self.local, self.local[wing], 0.28 * iod, (sign * 0.01 * iod, 0.06 * iod, 0.0))
            sneer *= (1 - self.jaw_weight[:N_LANDMARKS, None])
            self.set(f"noseSneer{side}", sneer)
        self.set("cheekPuff", puff)

    def tongue(self) -> None:
        tongue = np.flatnonzero(self.parts == "tongue")
        if len(tongue) == 0:
            return
        z = self.local[tongue, 2]
        front = (z - z.min()) / max(z.max() - z.min(), 1e-9)
        deltas = np.zeros_like(self.local)
        deltas[tongue, 2] = self.width * (0.25 + 0.35 * front)
        deltas[tongue, 1] = -0.04 * self.width * front
        self.deltas[INDEX["tongueOut"]] = deltas


def blendshape_deltas(vertices: np.ndarray, parts: np.ndarray, config: ReconstructConfig) -> np.ndarray:
    """(52, V, 3) float32 world-unit deltas in ARKIT_NAMES order for a rig's vertices.

    vertices: (V, 3) world coordinates, the 478 landmarks first; parts: (V,) labels, where
    mouth-interior vertices carry one of mouth.MOUTH_PARTS (others are ignored).
    """
    vertices = np.asarray(vertices, np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < N_LANDMARKS:
        raise ValueError(f"blendshape_deltas needs (V>=478, 3) vertices, got {vertices.shape}")
    builder = _ShapeBuilder(vertices, parts, config)
    builder.jaw()
    builder.mouth_close()
    builder.mouth_corners()
    builder.mouth_round()
    builder.lip_rolls_and_presses()
    builder.eyes()
    builder.brows()
    builder.cheeks_and_nose()
    builder.tongue()
    world = builder.frame.vectors_to_world(builder.deltas)
    return world.astype(np.float32)


def head_pivot(landmarks_world: np.ndarray) -> np.ndarray:
    """(3,) head rotation centre: behind the face, below the eye line, in world units."""
    frame = face_frame(landmarks_world[:N_LANDMARKS])
    return frame.to_world(np.array(HEAD_PIVOT_LOCAL) * frame.inter_ocular).astype(np.float32)
