"""Mouth interior: geometry, the painted colour band it is textured from, and the per-photo closing
offset of an open-mouth portrait.

An open mouth must never show the background, so a closed cavity ("bag") hangs behind the
inner-lip loop: its front ring duplicates the inner-lip landmarks (so its UVs can point into the
colour band instead of the photo), further rings go back and slightly inward, and a back wall
closes it. The upper half hangs from the upper lip and stays with the skull, the lower half
hangs from the lower lip and follows the jaw. Upper and lower teeth are curved strips just
behind the inner lips, and a tongue lies on the cavity floor.

Photo mode renders flat texture colour, so the light is painted into the band: a shadowed seam
at the lips' inner edge, then a dark red cavity that falls off with depth (never black: a lit
mouth shows its walls), separate teeth with dark gaps, gums, and sides that fall into a warm
shadow, and a tongue darker at its root and along its groove. Colours come from the photo: the
lips tint the cavity, gums and tongue; a portrait that shows its teeth gives their colour, and
its own teeth are copied into the teeth rows where it shows them (`paste_photo_teeth`).

A portrait whose mouth is open would otherwise show its own teeth and mouth at rest, under lips
that the rig then opens further. `rest_closing_offset` moves its lips together instead (the
photo's texture stays on them), and `fill_photo_mouth` paints the photo's opening over in the
lips' shade, so its rest frame is the photo with the lips closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.face_frame import FaceFrame, face_frame
from tasks.reconstruct.topology import N_LANDMARKS, face_topology

MOUTH_PARTS = ("cavity_upper", "cavity_lower", "teeth_upper", "teeth_lower", "tongue")
"""Labels of the mouth-interior vertices; lower parts follow the jaw."""

PATCH_SPANS = {"cavity": (0.0, 0.18), "teeth_upper": (0.18, 0.4), "teeth_lower": (0.4, 0.62),
               "tongue": (0.62, 0.8), "sclera": (0.8, 0.9), "lid": (0.9, 1.0)}
"""Share of a patch rectangle's width given to each painted patch, left to right; each patch
spans the rectangle's full height. Patch coordinates (s, t) run over [0, 1]²: s left → right,
t top → bottom."""

_INSET = 0.15
"""Patch coordinates map into the middle 70% of a patch, so neither nearest nor linear texture
lookups reach a neighbouring patch."""

# Tooth edges across the arch, |a| with a = 2s - 1 in [-1, 1] (a = 0 between the central
# incisors): incisor, lateral incisor, canine, premolar, as seen from the front (the arch turns
# away, so outer teeth look narrower).
_UPPER_TOOTH_EDGES = (0.0, 0.36, 0.62, 0.82, 0.94)
_LOWER_TOOTH_EDGES = (0.0, 0.24, 0.48, 0.70, 0.86)
_TOOTH_GAP = 0.018           # half-width of the dark gap between teeth, in a
_UPPER_GUM_T = 0.3           # upper teeth: gum above this t (t = 0 at the root)
_LOWER_GUM_T = 0.35          # lower teeth: gum below this t from the root

_CAVITY_RINGS = 3
_TEETH_COLUMNS = 13
_TONGUE_COLUMNS, _TONGUE_ROWS = 5, 4
_TEETH_HALF_WIDTH = 0.42     # of the mouth width, either side of the centre
_TEETH_ARCH_DEPTH = 0.25     # how far back the ends of the dental arch sit, of the mouth width
_CAVITY_RISE = 0.25          # upper-cavity bulge above the lip line, of the mouth width
_CAVITY_DROP = 0.22          # lower-cavity bulge below the lip line, of the mouth width
_CAVITY_NARROWING = 0.15     # inward pull of the back ring, fraction of the lip half-width
# Teeth rows: (height above the lip line, extra depth) in mouth widths, and the patch t of the
# row (t = 0 at the root). The upper teeth show 0.10 mouth widths below the upper lip; the lower
# teeth's edges stay just under the lower lip, as in most speakers: they show only as the jaw
# turns open (the lip, further from the hinge, drops more than they do).
_UPPER_TEETH_ROWS = ((0.16, 0.0, 0.0), (0.0, 0.0, 0.5), (-0.10, 0.01, 1.0))
_LOWER_TEETH_ROWS = ((-0.2, 0.0, 0.0), (-0.06, 0.0, 0.6), (-0.02, 0.01, 1.0))

# Base colours (RGB 0..255) that the photo's lip colour tints.
_CAVITY_FRONT_BASE = np.array([150.0, 50.0, 55.0])
_CAVITY_BACK_BASE = np.array([92.0, 24.0, 29.0])
_TONGUE_BASE = np.array([196.0, 92.0, 96.0])
_GUM_BASE = np.array([205.0, 112.0, 118.0])
_TEETH_DEFAULT = np.array([232.0, 224.0, 206.0])
_SCLERA_DEFAULT = np.array([226.0, 220.0, 214.0])
_LIP_SEAM = 0.25
"""Depth (patch s) of the shadowed seam just inside the lips."""
_SEAM_LUMA = 27.0
"""The seam is as dark as 70% of the deepest cavity colour, but no darker than this."""
_MIN_CAVITY_LUMA = 34.0
"""The deepest cavity colour stays at least this bright: a well-lit open mouth shows dim red
walls, not a black hole."""

LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class MouthInterior:
    """Vertices appended after the 478 landmarks, and the triangles that use them."""

    vertices: np.ndarray
    """(M, 3) float32 world coordinates."""

    faces: np.ndarray
    """(F, 3) int32 triangles indexing the full vertex array (landmarks first)."""

    uv_photo: np.ndarray
    """(M, 2) float32 UVs into the colour band of the rig texture."""

    uv_canonical: np.ndarray
    """(M, 2) float32 UVs into the colour corner of the canonical texture."""

    parts: np.ndarray
    """(M,) part label of each vertex, one of MOUTH_PARTS."""


@dataclass(frozen=True)
class MouthColours:
    """Colours (RGB 0..255) the band patches are painted from."""

    cavity_front: np.ndarray
    """Cavity walls just behind the lips."""

    cavity_back: np.ndarray
    """The deepest cavity wall."""

    teeth: np.ndarray
    """Lit front of the central incisors."""

    gum: np.ndarray
    """Gums above the upper and below the lower teeth."""

    tongue: np.ndarray
    """Tongue tip, lit."""

    sclera: np.ndarray
    """White of the eye beyond the photo's eye opening (eyeball sides)."""

    lid: np.ndarray
    """Skin of a closed upper eyelid."""


def patch_uv(part: str, s: np.ndarray, t: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """UVs of patch coordinates (s, t) in [0, 1]² inside the `part` patch of a rectangle (u0, v0, u1, v1)
    (v up, so t = 0, the patch's top row, is the largest v)."""
    u0, v0, u1, v1 = rect
    start, end = PATCH_SPANS[part]
    s, t = np.broadcast_arrays(np.asarray(s, np.float64), np.asarray(t, np.float64))
    s_in = _INSET + (1 - 2 * _INSET) * np.clip(s, 0.0, 1.0)
    t_in = _INSET + (1 - 2 * _INSET) * np.clip(t, 0.0, 1.0)
    u = u0 + (u1 - u0) * (start + (end - start) * s_in)
    v = v1 - (v1 - v0) * t_in
    return np.stack([u, v], axis=-1).astype(np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, np.float64) @ LUMA


def mouth_colours(lip_rgb: np.ndarray, face_luma: float, teeth_rgb: np.ndarray | None = None,
                  sclera_rgb: np.ndarray | None = None, lid_rgb: np.ndarray | None = None) -> MouthColours:
    """Interior colours tinted by the subject's lips, dimmed for dark photos.

    teeth_rgb / sclera_rgb / lid_rgb: the photo's own teeth, eye-white and eyelid-skin colours.
    """
    lip = np.asarray(lip_rgb, np.float64)
    brightness = float(np.clip(face_luma / 130.0, 0.7, 1.0))
    front = 0.3 * lip + 0.7 * _CAVITY_FRONT_BASE * brightness
    back = 0.15 * lip + 0.75 * _CAVITY_BACK_BASE * brightness
    # Keep the back red and above the near-black floor whatever the lips' colour.
    back[0] = max(back[0], back[1] + 45.0)
    if _luma(back) < _MIN_CAVITY_LUMA:
        back = back * _MIN_CAVITY_LUMA / max(float(_luma(back)), 1.0)
    teeth = _TEETH_DEFAULT * brightness if teeth_rgb is None else np.asarray(teeth_rgb, np.float64)
    # Teeth inside a mouth catch light off its red walls.
    teeth = teeth + 0.2 * (front - teeth)
    # A photo's teeth in shadow still read as teeth: lift them to at least 70% of the default.
    if _luma(teeth) < 0.7 * _luma(_TEETH_DEFAULT) * brightness:
        teeth = teeth * 0.7 * _luma(_TEETH_DEFAULT) * brightness / max(float(_luma(teeth)), 1.0)
    sclera = _SCLERA_DEFAULT * brightness if sclera_rgb is None else np.asarray(sclera_rgb, np.float64)
    return MouthColours(
        cavity_front=np.clip(front, 0, 255), cavity_back=np.clip(back, 0, 255),
        teeth=np.clip(teeth, 0, 255), gum=np.clip(0.4 * lip + 0.6 * _GUM_BASE * brightness, 0, 255),
        tongue=np.clip(0.45 * lip + 0.55 * _TONGUE_BASE * brightness, 0, 255),
        sclera=np.clip(sclera, 0, 255),
        lid=np.clip(np.asarray(lid_rgb, np.float64) if lid_rgb is not None else 0.9 * lip + 0.1 * face_luma, 0, 255))


def _teeth_colour(s: np.ndarray, t: np.ndarray, ds: float, colours: MouthColours, upper: bool) -> np.ndarray:
    """Teeth patch: s across the arch, t from the root (gum) to the biting edge; ds is one texel in s."""
    a = np.abs(2 * s - 1)
    edges = np.array(_UPPER_TOOTH_EDGES if upper else _LOWER_TOOTH_EDGES)
    to_edge = np.abs(a[..., None] - edges).min(axis=-1)
    # A gap of at least one texel, so it shows at every texture size.
    gap = to_edge < max(_TOOTH_GAP, ds / 2)
    # Rounded teeth: brighter in the middle of each tooth; the arch's sides turn into shadow.
    index = np.searchsorted(edges, a, side="right") - 1
    left, right = edges[np.clip(index, 0, len(edges) - 1)], np.append(edges[1:], 1.0)[np.clip(index, 0, len(edges) - 1)]
    within = np.clip((a - left) / np.maximum(right - left, 1e-6), 0, 1)
    rounded = 0.86 + 0.14 * np.sin(np.pi * within)
    side_shadow = 1.0 - 0.6 * a ** 1.4
    gum_t = _UPPER_GUM_T if upper else _LOWER_GUM_T
    # Biting edges are a little translucent (greyer), roots slightly yellower.
    edge = np.clip((t - 0.9) / 0.1, 0, 1)[..., None]
    shade = (rounded * side_shadow)[..., None]
    # Shadow inside a mouth is lit by the red walls around it: shaded teeth turn warm, not grey.
    warm = 0.75 * colours.cavity_front
    lit = colours.teeth * (1 - 0.25 * edge) + edge * 0.25 * np.array([170.0, 172.0, 180.0])
    tooth = lit * shade + warm * (1 - shade) * 0.9
    gap_colour = 0.45 * colours.cavity_back + 0.25 * colours.teeth * side_shadow[..., None]
    colour = np.where(gap[..., None], gap_colour, tooth)
    gum = colours.gum * (0.8 + 0.2 * (t / gum_t))[..., None] * side_shadow[..., None]
    return np.where((t < gum_t)[..., None], gum, colour)


def patch_colour(part: str, s: np.ndarray, t: np.ndarray, colours: MouthColours, ds: float = 0.0) -> np.ndarray:
    """(…, 3) colour of a patch at patch coordinates (s, t); ds: one texel's width in s."""
    s, t = np.broadcast_arrays(np.asarray(s, np.float64), np.asarray(t, np.float64))
    if part == "cavity":  # s: depth front → back; t: roof (0) → floor (1), the roof in the lip's shadow
        depth = s ** 0.6
        colour = colours.cavity_front * (1 - depth)[..., None] + colours.cavity_back * depth[..., None]
        # The lips' inner edge: a thin shadowed seam where the lips turn into the mouth.
        seam = np.clip(1.0 - s / _LIP_SEAM, 0.0, 1.0)[..., None]
        shadow = colours.cavity_back * max(0.7, _SEAM_LUMA / max(float(_luma(colours.cavity_back)), 1.0))
        colour = colour * (1 - seam) + shadow * seam
        return colour * (0.9 + 0.1 * t)[..., None]
    if part in ("teeth_upper", "teeth_lower"):
        return _teeth_colour(s, t, ds, colours, part == "teeth_upper")
    if part == "tongue":  # s: tip → root; t: across, with a darker middle groove
        across = 2 * t - 1
        shade = (1 - 0.4 * s) * (0.82 + 0.18 * (1 - across ** 2)) * np.where(np.abs(across) < 0.12, 0.9, 1.0)
        return colours.tongue * shade[..., None]
    if part == "sclera":  # s: from the eye opening outward, into the eyeball's shadowed sides
        return colours.sclera * (1 - 0.3 * s)[..., None]
    if part == "lid":  # s: inner → outer corner; t: lid skin (0) → lash line (1)
        lashes = np.clip((t - 0.8) / 0.12, 0.0, 1.0)[..., None]
        shade = (0.85 + 0.15 * np.sin(np.pi * s)) * (0.85 + 0.15 * np.sin(np.pi * t))  # rounded over the eye
        skin = colours.lid * shade[..., None]
        return skin * (1 - lashes) + 0.3 * colours.lid * lashes
    raise ValueError(f"unknown patch {part!r}")


def paint_patches(image: np.ndarray, rect_px: tuple[int, int, int, int], colours: MouthColours) -> None:
    """Paint every patch into image[y0:y1, x0:x1] (in place), texel by texel."""
    x0, y0, x1, y1 = rect_px
    width, height = x1 - x0, y1 - y0
    u = (np.arange(width) + 0.5) / width
    t_texel = (np.arange(height) + 0.5) / height
    # Invert patch_uv's inset so the colour under a UV is the patch colour at its (s, t).
    t = np.clip((t_texel - _INSET) / (1 - 2 * _INSET), 0.0, 1.0)
    block = np.zeros((height, width, 3))
    for part, (start, end) in PATCH_SPANS.items():
        inside = (u >= start) & ((u < end) if end < 1.0 else (u <= 1.0))
        s = np.clip(((u[inside] - start) / (end - start) - _INSET) / (1 - 2 * _INSET), 0.0, 1.0)
        ds = 1.0 / max((end - start) * width * (1 - 2 * _INSET), 1.0)
        block[:, inside] = patch_colour(part, s[None, :], t[:, None], colours, ds)
    image[y0:y1, x0:x1] = np.clip(np.round(block), 0, 255).astype(np.uint8)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of 2D points against a closed polygon."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / np.where(y1 == y0, 1e-12, y1 - y0) + x0)
    return crosses.sum(axis=1) % 2 == 1


def polygon_pixels(image: np.ndarray, polygon_px: np.ndarray) -> np.ndarray:
    """(N, 3) float colours of the pixels whose centres lie inside a pixel-space polygon."""
    low = np.clip(np.floor(polygon_px.min(axis=0)).astype(int), 0, None)
    high = np.minimum(np.ceil(polygon_px.max(axis=0)).astype(int) + 1, [image.shape[1], image.shape[0]])
    if (high <= low).any():
        return np.zeros((0, 3))
    cols, rows = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]))
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    inside = inside_polygon(centres, polygon_px)
    return image[rows.ravel()[inside], cols.ravel()[inside]].astype(np.float64)


def photo_teeth_colour(crop: np.ndarray, landmarks_px: np.ndarray, face_luma: float,
                       min_pixels: int = 12) -> np.ndarray | None:
    """Median colour of the bright, pale pixels inside the photo's inner lips, or None when the
    photo shows fewer than `min_pixels` of them (a closed mouth)."""
    pixels = polygon_pixels(crop, np.asarray(landmarks_px, np.float64)[face_topology().lips_inner_loop, :2])
    if len(pixels) == 0:
        return None
    luma = pixels @ LUMA
    saturation = (pixels.max(axis=1) - pixels.min(axis=1)) / np.maximum(pixels.max(axis=1), 1.0)
    # Pale, bright and hardly red: a pale tongue or lip is pinker than teeth.
    teeth = pixels[(luma > max(0.85 * face_luma, 100.0)) & (saturation < 0.3) & (pixels[:, 0] - pixels[:, 1] < 25.0)]
    if len(teeth) < min_pixels:
        return None
    return np.median(teeth, axis=0)


def paste_photo_teeth(image: np.ndarray, rect_px: tuple[int, int, int, int], crop: np.ndarray,
                      landmarks_px: np.ndarray, colours: MouthColours) -> int:
    """Copy the teeth an open-mouth photo shows into the teeth patches of image[y0:y1, x0:x1] (in place).

    Each teeth texel below the lip line (t past the lip row) is looked up where the rig's teeth
    strip would show it in the photo: across the arch along the photo's inner lip, down from the
    upper lip (up from the lower one). Photo pixels inside the inner lips that are teeth-bright,
    not cavity-dark or lip-red, replace the painted texels. Returns how many texels were replaced.
    """
    x0, y0, x1, y1 = rect_px
    size = crop.shape[0]
    photo = np.asarray(landmarks_px, np.float64)
    world = np.stack([(photo[:, 0] - size / 2) / size, (size / 2 - photo[:, 1]) / size, -photo[:, 2] / size], axis=1)
    frame = face_frame(world)
    local = frame.to_local(world)
    topology = face_topology()
    width = float(np.clip(frame.mouth_width, 0.6 * frame.inter_ocular, 1.3 * frame.inter_ocular))
    centre_x = local[topology.lips_inner_loop, 0].mean()
    opening = photo[topology.lips_inner_loop, :2]
    teeth_luma = float(_luma(colours.teeth))
    replaced = 0
    for part, arc, rows in (("teeth_upper", topology.lips_inner_upper, _UPPER_TEETH_ROWS),
                            ("teeth_lower", topology.lips_inner_lower, _LOWER_TEETH_ROWS)):
        start, end = PATCH_SPANS[part]
        c0, c1 = x0 + int(np.ceil(start * (x1 - x0) - 0.5)), x0 + int(np.ceil(end * (x1 - x0) - 0.5))
        cols, texel_rows = np.meshgrid(np.arange(c0, c1), np.arange(y0, y1))
        u = (cols + 0.5 - x0) / (x1 - x0)
        s = np.clip(((u - start) / (end - start) - _INSET) / (1 - 2 * _INSET), 0.0, 1.0)
        t = np.clip(((texel_rows + 0.5 - y0) / (y1 - y0) - _INSET) / (1 - 2 * _INSET), 0.0, 1.0)
        # Patch t → height above the lip line, by the rows' own (height, t) pairs.
        heights, ts = np.array([r[0] for r in rows]), np.array([r[2] for r in rows])
        by_height = np.argsort(heights)
        lip_t = np.interp(0.0, heights[by_height], ts[by_height])
        shows = t > lip_t  # the side of the lip row that shows when the mouth opens
        x = centre_x + (2 * s - 1) * _TEETH_HALF_WIDTH * width
        order = np.argsort(local[arc, 0])
        lip_y = np.interp(x, local[arc][order, 0], local[arc][order, 1])
        lip_z = np.interp(x, local[arc][order, 0], local[arc][order, 2])
        y = lip_y + np.interp(t, ts, heights) * width
        points = frame.to_world(np.stack([x, y, lip_z], axis=-1).reshape(-1, 3))
        px = np.stack([(points[:, 0] + 0.5) * size, (0.5 - points[:, 1]) * size], axis=1)
        inside = inside_polygon(px, opening).reshape(s.shape) & shows
        rows_px = np.clip(np.floor(px[:, 1]).astype(int), 0, size - 1).reshape(s.shape)
        cols_px = np.clip(np.floor(px[:, 0]).astype(int), 0, size - 1).reshape(s.shape)
        pixels = crop[rows_px, cols_px].astype(np.float64)
        toothy = (_luma(pixels) > 0.45 * teeth_luma) & (pixels[..., 0] - pixels[..., 1] < 30.0)
        take = inside & toothy
        image[texel_rows[take], cols[take]] = crop[rows_px[take], cols_px[take]]
        replaced += int(take.sum())
    return replaced


def fill_photo_mouth(crop: np.ndarray, landmarks_px: np.ndarray, lip_rgb: np.ndarray,
                     margin_px: float = 1.5) -> np.ndarray:
    """The crop with an open mouth's inside painted over in the lips' shade (a copy).

    Closing an open mouth at rest leaves the photo's teeth and dark inside on the lips' inner rim
    (MediaPipe's inner contour sits a pixel or two inside the lips), so the opening, grown by
    `margin_px`, becomes the line where the closed lips meet: lip colour, a little darker.
    """
    topology = face_topology()
    loop = np.asarray(landmarks_px, np.float64)[topology.lips_inner_loop, :2]
    centre = loop.mean(axis=0)
    offset = loop - centre
    grown = centre + offset * (1 + margin_px / np.maximum(np.linalg.norm(offset, axis=1, keepdims=True), 1e-6))
    # Keep the corners' reach: growing toward the corners would paint over the cheeks.
    grown[:, 1] = loop[:, 1] + np.sign(offset[:, 1]) * margin_px
    grown[:, 0] = np.clip(grown[:, 0], loop[:, 0].min(), loop[:, 0].max())
    low = np.clip(np.floor(grown.min(axis=0)).astype(int), 0, None)
    high = np.minimum(np.ceil(grown.max(axis=0)).astype(int) + 1, [crop.shape[1], crop.shape[0]])
    filled = crop.copy()
    if (high <= low).any():
        return filled
    cols, rows = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]))
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    inside = inside_polygon(centres, grown)
    filled[rows.ravel()[inside], cols.ravel()[inside]] = np.clip(0.8 * np.asarray(lip_rgb, np.float64), 0, 255)
    return filled


def inner_lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(n, 3) upper-minus-lower offsets of the inner-lip point pairs between the corners."""
    topology = face_topology()
    points = np.asarray(landmarks, np.float64)
    return points[topology.lips_inner_upper[1:-1]] - points[topology.lips_inner_lower[1:-1]]


def rest_closing_offset(landmarks_world: np.ndarray, config: ReconstructConfig) -> np.ndarray:
    """(478, 3) world offsets that close an open-mouth photo's lips; zeros for a closed mouth.

    Each inner-lip pair meets at `config.rest_close_upper_share` of its gap below the upper lip;
    the lips and the skin around them follow their nearest inner-lip points, fading out over about
    a mouth width, and the face oval, eyes and brows stay where the photo has them.
    """
    world = np.asarray(landmarks_world[:N_LANDMARKS], np.float64)
    frame = face_frame(world)
    local = frame.to_local(world)
    topology = face_topology()
    gap = inner_lip_gap(local)
    if np.abs(gap[:, 1]).max() < config.rest_close_threshold * frame.inter_ocular:
        return np.zeros_like(world)
    upper, lower = topology.lips_inner_upper[1:-1], topology.lips_inner_lower[1:-1]
    share = config.rest_close_upper_share
    handles = np.concatenate([upper, lower])
    handle_deltas = np.concatenate([-share * gap, (1 - share) * gap])
    anchors = np.unique(np.concatenate([topology.face_oval, topology.eye_left.loop, topology.eye_right.loop,
                                        topology.eye_left.iris, topology.eye_right.iris,
                                        topology.eye_left.brow_lower, topology.eye_right.brow_lower]))
    anchors = np.setdiff1d(anchors, handles)
    width = float(np.clip(frame.mouth_width, 0.6 * frame.inter_ocular, 1.3 * frame.inter_ocular))
    radius = 0.45 * width
    sources = np.concatenate([handles, anchors])
    source_deltas = np.concatenate([handle_deltas, np.zeros((len(anchors), 3))])
    distance = np.linalg.norm(local[:, None, :2] - local[None, sources, :2], axis=2)
    weights = 1.0 / (distance ** 2 + (0.05 * radius) ** 2)
    blended = (weights @ source_deltas) / weights.sum(axis=1, keepdims=True)
    nearest = distance[:, :len(handles)].min(axis=1) / radius
    deltas = blended * np.where(nearest < 3.0, np.exp(-nearest ** 2), 0.0)[:, None]
    deltas[handles] = handle_deltas
    deltas[anchors] = 0.0
    return frame.vectors_to_world(deltas)


def _interp_along_x(points: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Linear interpolation of an arc's (y, z) at the given x (arc sorted by x)."""
    order = np.argsort(points[:, 0])
    xs = points[order, 0]
    return np.stack([np.interp(x, xs, points[order, 1]), np.interp(x, xs, points[order, 2])], axis=1)


def _grid_faces(index: np.ndarray) -> list[tuple[int, int, int]]:
    """Two triangles per cell of a 2D grid of vertex indices."""
    faces = []
    for r in range(index.shape[0] - 1):
        for c in range(index.shape[1] - 1):
            a, b, d, e = index[r, c], index[r, c + 1], index[r + 1, c + 1], index[r + 1, c]
            faces += [(a, b, d), (a, d, e)]
    return faces


def orient_faces(faces: np.ndarray, vertices: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """Flip triangles so each normal has a positive component along `towards` ((3,) or (F,3))."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    normal = np.cross(b - a, c - a)
    flip = (normal * towards).sum(axis=-1) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def build_mouth_interior(landmarks_world: np.ndarray, frame: FaceFrame, config: ReconstructConfig,
                         band_rect: tuple[float, float, float, float],
                         canonical_rect: tuple[float, float, float, float]) -> MouthInterior:
    """Cavity, teeth and tongue for a (478, 3) world landmark array.

    band_rect / canonical_rect: (u0, v0, u1, v1) of the patch rectangles in the rig texture and
    in the canonical texture.
    """
    topology = face_topology()
    local = frame.to_local(np.asarray(landmarks_world[:N_LANDMARKS], np.float64))
    loop = topology.lips_inner_loop
    n_upper = len(topology.lips_inner_upper)
    width = float(np.clip(frame.mouth_width, 0.6 * frame.inter_ocular, 1.3 * frame.inter_ocular))
    loop_points = local[loop]
    centre = loop_points.mean(axis=0)
    upper_arc, lower_arc = local[topology.lips_inner_upper], local[topology.lips_inner_lower]

    positions: list[np.ndarray] = []
    parts: list[str] = []
    uv_band: list[np.ndarray] = []
    uv_canon: list[np.ndarray] = []

    def add(points, part, patch, s, t):
        start = N_LANDMARKS + sum(len(p) for p in positions)
        positions.append(np.asarray(points, np.float64))
        parts.extend([part] * len(points) if isinstance(part, str) else part)
        uv_band.append(patch_uv(patch, s, t, band_rect))
        uv_canon.append(patch_uv(patch, s, t, canonical_rect))
        return np.arange(start, start + len(points))

    # 1. Cavity rings: ring 0 duplicates the inner-lip loop and comes first, in loop order (the
    #    blendshapes rely on that); ring k sits k/K of the depth back.
    # Loop order: upper arc right→left (corners at 0 and n_upper-1), then lower arc left→right.
    side = np.where(np.arange(len(loop)) < n_upper, 1.0, -1.0)
    side[[0, n_upper - 1]] = 0.0
    loop_parts = np.where(side < 0, "cavity_lower", "cavity_upper")
    half_width = np.maximum(np.abs(loop_points[:, 0] - centre[0]).max(), 1e-9)
    across = np.clip((loop_points[:, 0] - centre[0]) / half_width, -1.0, 1.0)
    bulge = np.sqrt(1.0 - across ** 2)
    depth = config.mouth_depth * width
    roof_floor = 0.5 - 0.5 * side  # patch t: 0 on the roof, 1 on the floor
    rings = []
    for k in range(_CAVITY_RINGS + 1):
        t = k / _CAVITY_RINGS
        ring = loop_points.copy()
        ring[:, 0] = centre[0] + (loop_points[:, 0] - centre[0]) * (1 - _CAVITY_NARROWING * t)
        lift = np.where(side > 0, _CAVITY_RISE, _CAVITY_DROP) * width * np.sin(np.pi / 2 * min(1.0, 1.5 * t))
        ring[:, 1] += side * lift * bulge
        ring[:, 2] -= depth * t
        rings.append(add(ring, list(loop_parts), "cavity", np.full(len(loop), t), roof_floor))
    cavity_faces = []
    n_loop = len(loop)
    for k in range(_CAVITY_RINGS):
        for i in range(n_loop):
            j = (i + 1) % n_loop
            a, b, c, d = rings[k][i], rings[k][j], rings[k + 1][j], rings[k + 1][i]
            cavity_faces += [(a, b, c), (a, c, d)]
    # Back wall: a strip between the last ring's upper and lower arcs (they share the corners).
    back = rings[-1]
    back_upper = back[:n_upper]
    back_lower = np.concatenate([back[:1], back[n_upper:][::-1], back[n_upper - 1:n_upper]])
    for i in range(n_upper - 1):
        quad = (back_upper[i], back_upper[i + 1], back_lower[i + 1], back_lower[i])
        if quad[0] == quad[3]:
            cavity_faces.append((quad[0], quad[1], quad[2]))
        elif quad[1] == quad[2]:
            cavity_faces.append((quad[0], quad[1], quad[3]))
        else:
            cavity_faces += [(quad[0], quad[1], quad[2]), (quad[0], quad[2], quad[3])]

    # 2. Teeth: curved strips following the inner lips, set back and arched; rows root → edge.
    s_arch = np.linspace(-1.0, 1.0, _TEETH_COLUMNS)
    x = centre[0] + s_arch * _TEETH_HALF_WIDTH * width
    arch = _TEETH_ARCH_DEPTH * width * s_arch ** 2
    patch_s = (s_arch + 1) / 2
    upper_yz = _interp_along_x(upper_arc, x)
    lower_yz = _interp_along_x(lower_arc, x)
    teeth_z_upper = upper_yz[:, 1] - config.teeth_depth * width - arch
    teeth_z_lower = lower_yz[:, 1] - (config.teeth_depth + 0.04) * width - 0.7 * arch
    upper_grid = np.stack([add(np.stack([x, upper_yz[:, 0] + dy * width, teeth_z_upper - dz * width], axis=1),
                               "teeth_upper", "teeth_upper", patch_s, np.full(len(x), t))
                           for dy, dz, t in _UPPER_TEETH_ROWS])
    lower_grid = np.stack([add(np.stack([x, lower_yz[:, 0] + dy * width, teeth_z_lower - dz * width], axis=1),
                               "teeth_lower", "teeth_lower", patch_s, np.full(len(x), t))
                           for dy, dz, t in _LOWER_TEETH_ROWS])
    teeth_faces = _grid_faces(upper_grid) + _grid_faces(lower_grid)

    # 3. Tongue: a low dome on the lower cavity floor, from behind the lower teeth backwards.
    front_z = float(lower_yz[len(x) // 2, 1]) - (config.teeth_depth + 0.12) * width
    floor_y = float(lower_yz[len(x) // 2, 0]) - 0.10 * width
    along = np.linspace(0.0, 1.0, _TONGUE_ROWS)
    tongue_rows = []
    for a in along:
        half = 0.30 * width * (0.75 + 0.25 * np.sin(np.pi / 2 * min(1.0, 2 * a + 0.3)))
        across_t = np.linspace(-1.0, 1.0, _TONGUE_COLUMNS)
        dome = 0.08 * width * (1 - across_t ** 2) * (0.6 + 0.4 * np.sin(np.pi * a))
        points = np.stack([centre[0] + across_t * half, floor_y + dome,
                           np.full_like(across_t, front_z - a * 0.5 * depth)], axis=1)
        tongue_rows.append(add(points, "tongue", "tongue", np.full(len(points), a), (across_t + 1) / 2))
    tongue_faces = _grid_faces(np.stack(tongue_rows))

    local_all = np.concatenate([local] + positions)
    # Normals: cavity walls face into the cavity, teeth face the camera, the tongue faces up and out.
    cavity_faces = np.array(cavity_faces, np.int32)
    cavity_centre = np.concatenate(positions[:len(rings)]).mean(axis=0)
    tri_centres = local_all[cavity_faces].mean(axis=1)
    cavity_faces = orient_faces(cavity_faces, local_all, cavity_centre - tri_centres)
    teeth_faces = orient_faces(np.array(teeth_faces, np.int32), local_all, np.array([0.0, 0.0, 1.0]))
    tongue_faces = orient_faces(np.array(tongue_faces, np.int32), local_all, np.array([0.0, 1.0, 0.5]))

    return MouthInterior(
        vertices=frame.to_world(np.concatenate(positions)).astype(np.float32),
        faces=np.concatenate([cavity_faces, teeth_faces, tongue_faces]).astype(np.int32),
        uv_photo=np.concatenate(uv_band).astype(np.float32),
        uv_canonical=np.concatenate(uv_canon).astype(np.float32),
        parts=np.array(parts))
