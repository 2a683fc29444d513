"""Style presets shipped as small procedural PNGs, and resolution of a style value to an image.

``python -m tasks.style.presets`` regenerates the PNGs deterministically. The value "none"
(keep the photo, no style transfer) is handled by the callers, not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESET_SIZE = 160

STYLE_PRESETS: dict[str, str] = {
    "oil": "oil.png",
    "sketch": "sketch.png",
    "mosaic": "mosaic.png",
    "watercolour": "watercolour.png",
}


def resolve_style(value: str, manifest_dir: Path | None = None) -> tuple[str, np.ndarray]:
    """A preset name → (name, its image); otherwise an image path (relative to ``manifest_dir``
    when given) → (path, H×W×3 uint8 RGB). Callers handle "none" before calling."""
    if value in STYLE_PRESETS:
        return value, _load_rgb(PRESET_DIR / STYLE_PRESETS[value])
    path = Path(value).expanduser()
    if not path.is_absolute() and manifest_dir is not None:
        path = Path(manifest_dir) / path
    if not path.is_file():
        names = ", ".join(STYLE_PRESETS)
        raise ValueError(f"unknown style {value!r}: use one of the presets {names} or an image path")
    return str(path), _load_rgb(path)


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _smooth_field(rng: np.random.Generator, size: int, waves: int = 6) -> np.ndarray:
    """A smooth random field in about [−1, 1]: a sum of random plane waves."""
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for _ in range(waves):
        fx, fy = rng.uniform(-3.0, 3.0, size=2)
        field += np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
    return field / np.sqrt(waves / 2)


def make_oil(size: int = PRESET_SIZE, seed: int = 1) -> np.ndarray:
    """Short thick brush strokes in a warm palette, following a smooth direction field."""
    rng = np.random.default_rng(seed)
    palette = np.array([(178, 84, 38), (214, 146, 62), (236, 200, 120), (120, 52, 30),
                        (70, 44, 36), (196, 112, 80), (240, 226, 180), (60, 90, 110)], dtype=float)
    canvas = Image.new("RGB", (size, size), (150, 96, 58))
    draw = ImageDraw.Draw(canvas)
    angle = _smooth_field(rng, size, waves=4) * np.pi
    for _ in range(size * size // 18):
        x, y = rng.uniform(0, size, size=2)
        theta = angle[int(y) % size, int(x) % size] + rng.normal(0, 0.2)
        length = rng.uniform(6, 16)
        width = int(rng.integers(3, 7))
        colour = palette[rng.integers(len(palette))] * rng.uniform(0.85, 1.1) + rng.normal(0, 8, 3)
        dx, dy = np.cos(theta) * length / 2, np.sin(theta) * length / 2
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=tuple(np.clip(colour, 0, 255).astype(int)),
                  width=width, joint="curve")
        # A lighter ridge along one side of the stroke reads as impasto.
        highlight = np.clip(colour * 1.18 + 12, 0, 255).astype(int)
        ox, oy = -np.sin(theta) * width / 3, np.cos(theta) * width / 3
        draw.line([(x - dx * 0.8 + ox, y - dy * 0.8 + oy), (x + dx * 0.8 + ox, y + dy * 0.8 + oy)],
                  fill=tuple(highlight), width=1)
    return np.asarray(canvas.filter(ImageFilter.SMOOTH), dtype=np.uint8)


def make_sketch(size: int = PRESET_SIZE, seed: int = 2) -> np.ndarray:
    """Pencil hatching in greys on warm paper, denser (cross-hatched) where a tone field is dark."""
    rng = np.random.default_rng(seed)
    paper = np.array([242, 236, 222], dtype=float)
    grain = rng.normal(0, 4, (size, size, 1))
    canvas = Image.fromarray(np.clip(paper + grain, 0, 255).astype(np.uint8))
    overlay = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(overlay)
    tone = (_smooth_field(rng, size, waves=5) + 1.0) / 2.0
    for direction in (0.8, -0.7, 0.05):
        cos, sin = np.cos(direction), np.sin(direction)
        for _ in range(size * 3):
            x, y = rng.uniform(-10, size + 10, size=2)
            darkness = tone[int(np.clip(y, 0, size - 1)), int(np.clip(x, 0, size - 1))]
            # Later hatching directions only go where the tone is dark: cross-hatching.
            if direction != 0.8 and darkness < (0.45 if direction < 0 else 0.7):
                continue
            length = rng.uniform(10, 28)
            strength = int(np.clip(rng.uniform(60, 150) * (0.4 + darkness), 0, 230))
            draw.line([(x, y), (x + cos * length, y - sin * length)], fill=strength, width=1)
    alpha = np.asarray(overlay.filter(ImageFilter.GaussianBlur(0.4)), dtype=float)[..., None] / 255.0
    graphite = np.array([58, 58, 64], dtype=float)
    image = np.asarray(canvas, dtype=float) * (1 - alpha) + graphite * alpha
    return np.clip(image, 0, 255).astype(np.uint8)


def make_mosaic(size: int = PRESET_SIZE, seed: int = 3) -> np.ndarray:
    """Voronoi tiles in saturated colours, each slightly shaded, separated by dark grout."""
    rng = np.random.default_rng(seed)
    cell = 12
    grid = np.mgrid[0:size + cell:cell, 0:size + cell:cell].reshape(2, -1).T.astype(float)
    centres = grid + rng.uniform(-cell * 0.4, cell * 0.4, grid.shape)
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([y.ravel(), x.ravel()], axis=1).astype(float)
    distances = np.linalg.norm(pixels[:, None, :] - centres[None, :, :], axis=2)
    nearest_two = np.argsort(distances, axis=1)[:, :2]
    d1 = np.take_along_axis(distances, nearest_two[:, :1], axis=1)[:, 0]
    d2 = np.take_along_axis(distances, nearest_two[:, 1:], axis=1)[:, 0]
    palette = np.array([(32, 86, 160), (220, 170, 40), (180, 50, 40), (40, 140, 110),
                        (230, 225, 205), (90, 60, 140), (210, 110, 40)], dtype=float)
    tile_colours = palette[rng.integers(len(palette), size=len(centres))]
    tile_colours *= rng.uniform(0.8, 1.1, (len(centres), 1))
    colours = tile_colours[nearest_two[:, 0]]
    # Tiles darken slightly toward their edges; the grout is where two tiles are nearly equidistant.
    colours *= (1.0 - 0.25 * np.clip(d1 / cell, 0, 1))[:, None]
    grout = (d2 - d1) < 1.6
    colours[grout] = (70, 66, 60)
    image = colours.reshape(size, size, 3) + rng.normal(0, 3, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_watercolour(size: int = PRESET_SIZE, seed: int = 4) -> np.ndarray:
    """Translucent washes of soft colour with darker dried edges, on textured paper."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (246, 242, 232), dtype=float)
    image += rng.normal(0, 3, (size, size, 1))
    pigments = np.array([(40, 110, 170), (200, 80, 90), (230, 170, 60), (80, 150, 90), (120, 80, 150)],
                        dtype=float)
    y, x = np.mgrid[0:size, 0:size]
    for _ in range(22):
        cx, cy = rng.uniform(0, size, 2)
        radius = rng.uniform(size * 0.08, size * 0.22)
        wobble = _smooth_field(rng, size, waves=6) * radius * 0.35
        inside = np.clip((radius + wobble - np.hypot(x - cx, y - cy)) / 3.0, 0.0, 1.0)
        # Pigment pools at the rim of a drying wash: more density where the mask falls off.
        edge = np.asarray(Image.fromarray((inside * 255).astype(np.uint8)).filter(ImageFilter.FIND_EDGES),
                          dtype=float) / 255.0
        density = inside * rng.uniform(0.25, 0.45) + np.clip(edge, 0, 1) * 0.35
        pigment = pigments[rng.integers(len(pigments))]
        # Subtractive mixing: each wash multiplies the paper by its transmittance.
        image *= 1.0 - density[..., None] * (1.0 - pigment / 255.0)
    blurred = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    return np.asarray(blurred, dtype=np.uint8)


_MAKERS = {"oil": make_oil, "sketch": make_sketch, "mosaic": make_mosaic, "watercolour": make_watercolour}


def _main() -> None:
    PRESET_DIR.mkdir(parents=True, exist_ok=True)
    for name, filename in STYLE_PRESETS.items():
        path = PRESET_DIR / filename
        Image.fromarray(_MAKERS[name]()).save(path, optimize=True)
        print(f"{name}: {path.name} {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    _main()
