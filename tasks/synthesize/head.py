"""A head behind the face mask: the face oval is swept back over an ellipsoid to a pole at the back
of the skull, so no view shows the mask's edge or a hole, and its skin and hair take the
portrait's own colours.

The ellipsoid lives in the face's frame (x across the eyes, y chin → forehead, z out of the face):
its centre sits behind the oval and above its middle, so the crown rises above the forehead-top
landmark, and its lower half has its own radius so the jaw closes under the chin. Ring 0 of the
sweep is the oval itself (shared vertices: the seam is closed); ring r follows each oval point's
direction from the centre, turned toward the back pole, while the oval's offset from the ellipsoid
fades out. Head vertices follow their oval vertex's blendshapes, fading the same way, so the
seam stays closed when the jaw opens.

A neck, a closed elliptic tube, rises from below the image into the underside of the skull behind
the jaw, so a face seen from below or from the side has skin under its chin, not background. Two
ears, closed lens-shaped plates, stand out from the sides of the skull, tilted back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.reconstruct.face_frame import face_frame
from tasks.reconstruct.topology import CHIN_BOTTOM, FOREHEAD_TOP, N_LANDMARKS, face_topology

RINGS = 10
WIDTH_SCALE = 1.25
"""Skull half-width over the face oval's half-width."""
CROWN_RISE = 0.3
"""Crown above the forehead-top landmark, in face heights."""
DEPTH_SCALE = 2.3
"""Skull depth (front of the oval to the back of the head) over the oval's half-width."""
CENTRE_BEHIND = 0.45
"""Where the ellipsoid's centre sits behind the oval plane, as a share of the skull depth."""
FEATHER = 0.06
"""Width of the fade from the photo to the head's skin colour inside the face oval, in face heights."""
HAIRLINE = 0.25
"""Head triangles above this height (share of the crown's rise over the centre) are hair."""
NECK_WIDTH = 0.85
"""Neck half-width over the oval's half-width."""
NECK_DEPTH = 0.85
"""Neck half-depth (front to back) over the oval's half-width."""
NECK_BEHIND_CHIN = 0.12
"""Throat behind the chin landmark, in face heights."""
NECK_LENGTH = 1.2
"""Neck below the chin landmark, in face heights."""
NECK_SIDES, NECK_RINGS = 24, 5
EAR_HEIGHT, EAR_WIDTH, EAR_THICKNESS = 0.32, 0.2, 0.025
"""Ear size in face heights."""
EAR_DROP = 0.08
"""Ear centre below the skull centre, in face heights."""
EAR_ROOT = 0.85
"""Where the ear leaves the skull, as a share of the skull's half-width: deep enough that the ear's
front edge stays inside the coarse skull mesh (at 0.93, 1–6 px of background showed between ear and
skull in 10% of 1,000 renders at 512²)."""
EAR_FLARE_DEG = 25.0
"""Angle between an ear and the side of the head."""
EAR_POINTS = 16
CHEEK_LANDMARKS = (205, 425, 50, 280)
FOREHEAD_SAMPLE = 0.3
"""Hair colour is sampled this far (in face heights) above the forehead-top landmark."""


@dataclass(frozen=True)
class Head:
    vertices: np.ndarray
    """(H, 3) new vertices, world units, at rest."""
    faces: np.ndarray
    """(F, 3) triangles into the rig's vertices followed by these (outward normals)."""
    hair: np.ndarray
    """(F,) bool: the triangle is hair (else head skin)."""
    attached: np.ndarray
    """(F,) bool: the triangle is the neck's or an ear's (each a closed surface of its own, not
    stitched to the skull)."""
    owner: np.ndarray
    """(H,) the oval vertex each new vertex follows."""
    follow: np.ndarray
    """(H,) how much of its owner's blendshape offsets it takes, 1 at the oval, 0 at the back."""


def _slerp_to_back(directions: np.ndarray, t: float) -> np.ndarray:
    back = np.array([0.0, 0.0, -1.0])
    cos = np.clip(directions @ back, -1.0, 1.0)
    angle = np.arccos(cos)[:, None]
    safe = np.where(np.sin(angle) < 1e-6, 1.0, np.sin(angle))
    return (np.sin((1 - t) * angle) * directions + np.sin(t * angle) * back) / safe


def build_head(vertices: np.ndarray) -> Head:
    """The head for a rig's rest vertices (the 478 landmarks first)."""
    topology = face_topology()
    frame = face_frame(vertices[:N_LANDMARKS])
    oval = np.asarray(topology.face_oval)
    local = frame.to_local(vertices[oval].astype(np.float64))
    top, chin = frame.to_local(vertices[[FOREHEAD_TOP, CHIN_BOTTOM]].astype(np.float64))
    half_width = float(np.abs(local[:, 0] - local[:, 0].mean()).max())
    depth = DEPTH_SCALE * half_width
    centre = np.array([local[:, 0].mean(), (top[1] + chin[1]) / 2.0, local[:, 2].mean() - CENTRE_BEHIND * depth])
    radius_x = WIDTH_SCALE * half_width
    radius_up = top[1] + CROWN_RISE * frame.face_height - centre[1]
    radius_down = centre[1] - chin[1]
    radius_z = depth - CENTRE_BEHIND * depth

    def radii(direction_y: np.ndarray) -> np.ndarray:
        return np.stack([np.full_like(direction_y, radius_x), np.where(direction_y >= 0, radius_up, radius_down),
                         np.full_like(direction_y, radius_z)], axis=-1)

    offset = local - centre
    scaled = offset / radii(offset[:, 1])
    directions = scaled / np.linalg.norm(scaled, axis=1, keepdims=True)
    on_ellipsoid = centre + radii(directions[:, 1]) * directions
    rings, follow = [], []
    for r in range(1, RINGS):
        t = r / RINGS
        turned = _slerp_to_back(directions, t)
        fade = (1.0 - t) ** 3
        rings.append(centre + radii(turned[:, 1]) * turned + fade * (local - on_ellipsoid))
        follow.append(np.full(len(oval), (1.0 - t) ** 2))
    pole = centre + np.array([0.0, 0.0, -radius_z])
    new_local = np.concatenate(rings + [pole[None]])
    n_old, n_oval = len(vertices), len(oval)

    def ring_index(r: int) -> np.ndarray:
        return oval if r == 0 else n_old + (r - 1) * n_oval + np.arange(n_oval)

    faces = []
    for r in range(RINGS - 1):
        a, b = ring_index(r), ring_index(r + 1)
        a_next, b_next = np.roll(a, -1), np.roll(b, -1)
        faces += [np.stack([a, b, a_next], 1), np.stack([a_next, b, b_next], 1)]
    last = ring_index(RINGS - 1)
    faces.append(np.stack([last, np.full(n_oval, n_old + len(new_local) - 1), np.roll(last, -1)], 1))
    faces = np.concatenate(faces).astype(np.int32)

    all_local = np.concatenate([frame.to_local(vertices.astype(np.float64)), new_local])
    corners = all_local[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    outward = (normals * (corners.mean(axis=1) - centre)).sum(axis=1) >= 0
    faces[~outward] = faces[~outward][:, ::-1]
    centroids = corners.mean(axis=1)
    hair = centroids[:, 1] > centre[1] + HAIRLINE * radius_up

    throat = chin[2] - NECK_BEHIND_CHIN * frame.face_height
    neck_centre = np.array([centre[0], throat - NECK_DEPTH * half_width])
    neck_local, neck_faces = _neck(neck_centre, NECK_WIDTH * half_width, NECK_DEPTH * half_width,
                                   top=centre[1], bottom=chin[1] - NECK_LENGTH * frame.face_height,
                                   first_index=n_old + len(new_local))
    parts_local, parts_faces = [neck_local], [neck_faces]
    for side in (1.0, -1.0):
        root = np.array([centre[0] + side * EAR_ROOT * radius_x, centre[1] - EAR_DROP * frame.face_height, centre[2]])
        ear_local, ear_faces = _ear(root, side, frame.face_height,
                                    first_index=n_old + len(new_local) + sum(len(v) for v in parts_local))
        parts_local.append(ear_local)
        parts_faces.append(ear_faces)
    extra_local, extra_faces = np.concatenate(parts_local), np.concatenate(parts_faces)
    return Head(vertices=frame.to_world(np.concatenate([new_local, extra_local])).astype(np.float32),
                faces=np.concatenate([faces, extra_faces]).astype(np.int32),
                hair=np.concatenate([hair, np.zeros(len(extra_faces), bool)]),
                attached=np.concatenate([np.zeros(len(faces), bool), np.ones(len(extra_faces), bool)]),
                owner=np.concatenate([oval] * (RINGS - 1) + [oval[:1]] + [oval[:1]] * len(extra_local)),
                follow=np.concatenate(follow + [np.zeros(1 + len(extra_local))]).astype(np.float32))


def _ear(root: np.ndarray, side: float, face_height: float, first_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed lens-shaped ear from `root` on the skull, reaching back and out (`side` +1: +x), its
    vertices (local) and outward triangles indexed from `first_index`."""
    flare = np.radians(EAR_FLARE_DEG)
    back = np.array([side * np.sin(flare), 0.0, -np.cos(flare)])  # along the ear, away from the face
    up = np.array([0.0, 1.0, 0.0])
    normal = np.cross(up, back)
    half_width, half_height = EAR_WIDTH * face_height / 2, EAR_HEIGHT * face_height / 2
    middle = root + back * half_width
    angles = np.linspace(0.0, 2 * np.pi, EAR_POINTS, endpoint=False)
    ring = middle + np.outer(np.cos(angles), back) * half_width + np.outer(np.sin(angles), up) * half_height
    thickness = EAR_THICKNESS * face_height
    vertices = np.concatenate([ring, [middle + normal * thickness, middle - normal * thickness]])
    around = first_index + np.arange(EAR_POINTS)
    apexes = first_index + EAR_POINTS + np.arange(2)
    faces = np.concatenate([np.stack([np.full(EAR_POINTS, apexes[0]), around, np.roll(around, -1)], 1),
                            np.stack([np.full(EAR_POINTS, apexes[1]), np.roll(around, -1), around], 1)])
    corners = vertices[faces - first_index]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    inward = (normals * (corners.mean(axis=1) - middle)).sum(axis=1) < 0
    faces[inward] = faces[inward][:, ::-1]
    return vertices, faces


def _neck(centre_xz: np.ndarray, radius_x: float, radius_z: float, top: float, bottom: float,
          first_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed elliptic tube along the face frame's y axis, capped at both ends: its vertices
    (local) and outward triangles indexed from `first_index`."""
    angles = np.linspace(0.0, 2 * np.pi, NECK_SIDES, endpoint=False)
    ring = np.stack([centre_xz[0] + radius_x * np.cos(angles), np.zeros(NECK_SIDES),
                     centre_xz[1] + radius_z * np.sin(angles)], axis=1)
    heights = np.linspace(top, bottom, NECK_RINGS)
    rings = [ring + np.array([0.0, y, 0.0]) for y in heights]
    caps = np.array([[centre_xz[0], top, centre_xz[1]], [centre_xz[0], bottom, centre_xz[1]]])
    vertices = np.concatenate(rings + [caps])

    def at(r: int) -> np.ndarray:
        return first_index + r * NECK_SIDES + np.arange(NECK_SIDES)

    top_cap, bottom_cap = first_index + NECK_RINGS * NECK_SIDES, first_index + NECK_RINGS * NECK_SIDES + 1
    faces = []
    for r in range(NECK_RINGS - 1):  # going down the tube, angles counter-clockwise seen from above (+y)
        a, b = at(r), at(r + 1)
        faces += [np.stack([a, np.roll(a, -1), b], 1), np.stack([np.roll(a, -1), np.roll(b, -1), b], 1)]
    faces += [np.stack([np.full(NECK_SIDES, top_cap), np.roll(at(0), -1), at(0)], 1),
              np.stack([np.full(NECK_SIDES, bottom_cap), at(NECK_RINGS - 1), np.roll(at(NECK_RINGS - 1), -1)], 1)]
    return vertices, np.concatenate(faces)


def head_colours(texture: np.ndarray, landmarks_px: np.ndarray, face_height_px: float) -> dict[str, np.ndarray]:
    """sRGB colours (0–255) of the head's skin (median of cheek patches) and hair (a patch above the
    forehead) from the rig's crop photo."""
    side = texture.shape[1]

    def patch(x: float, y: float, half: int) -> np.ndarray:
        x0, y0 = int(np.clip(x - half, 0, side - 1)), int(np.clip(y - half, 0, side - 1))
        return texture[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1].reshape(-1, 3)

    half = max(1, int(0.03 * face_height_px))
    skin = np.median(np.concatenate([patch(*landmarks_px[k, :2], half) for k in CHEEK_LANDMARKS]), axis=0)
    top = landmarks_px[FOREHEAD_TOP, :2]
    hair = np.median(patch(top[0], top[1] - FOREHEAD_SAMPLE * face_height_px, 2 * half), axis=0)
    return {"skin": skin.astype(np.float64), "hair": hair.astype(np.float64)}


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    c = np.asarray(srgb, np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def feather_face_edge(texture: np.ndarray, landmarks_px: np.ndarray, skin: np.ndarray,
                      width_px: float) -> np.ndarray:
    """The rig texture with its photo part faded to the head's skin colour over `width_px` inside
    the face oval, so the photo's edge (hair, ears, background at the mask's rim) meets the head
    without a seam; outside the oval, which only texture filtering reaches, it is skin. The
    texture's band below the photo (mouth and eye patches) is left as it is."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    side = texture.shape[1]
    outline = Image.new("L", (side, side), 0)
    ImageDraw.Draw(outline).polygon([tuple(point) for point in landmarks_px[face_topology().face_oval, :2]], fill=1)
    inside = np.asarray(outline, bool)
    keep = np.clip(ndimage.distance_transform_edt(inside) / max(width_px, 1.0), 0.0, 1.0)[..., None]
    feathered = texture.copy()
    feathered[:side] = np.rint(keep * texture[:side] + (1.0 - keep) * skin).astype(np.uint8)
    return feathered
