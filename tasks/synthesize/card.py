"""A data set's card: what it holds, how its labels are distributed, what a few samples look like,
and where its identities came from. Written next to the data set as card.md and card_grid.png."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from stores.location import DataLocation
from stores.synthetic_store import SyntheticStore

CARD = "card.md"
GRID = "card_grid.png"
PROVENANCE_FILES = ("PROVENANCE.md", "README.md", "LICENSE", "LICENSE.txt")
_CLASS_COLOURS = np.array([[0, 0, 0], [214, 170, 140], [90, 60, 30], [245, 245, 245], [210, 40, 70], [90, 10, 40],
                           [60, 110, 200], [120, 200, 90]], dtype=np.uint8)


def histogram_lines(values: pd.Series, low: float, high: float, step: float, width: int = 40) -> list[str]:
    """A text histogram, one line per bin of `step` from `low` to `high`."""
    edges = np.arange(low, high + step, step)
    counts, _ = np.histogram(values.to_numpy(), bins=edges)
    top = max(int(counts.max()), 1)
    return [f"    {a:7.1f} .. {b:7.1f} | {'#' * int(round(width * n / top)):<{width}} {n}"
            for a, b, n in zip(edges[:-1], edges[1:], counts)]


def sample_grid(store: SyntheticStore, index: pd.DataFrame, count: int = 8, tile: int = 192) -> Image.Image:
    """`count` samples spread over the index, each as the render with its visible landmarks (green)
    and hidden ones (red), beside its segmentation."""
    labels = store.labels()
    chosen = index.iloc[np.linspace(0, len(index) - 1, min(count, len(index))).round().astype(int)]
    rows = []
    for sample, image in zip(chosen["sample"], chosen["image"]):
        render = Image.fromarray(store.read_image(image))
        scale = tile / render.width
        render = render.resize((tile, tile), Image.BILINEAR)
        draw = ImageDraw.Draw(render)
        for (x, y), visible in zip(labels["landmarks_2d"][int(sample)] * scale, labels["visible"][int(sample)]):
            draw.point((float(x), float(y)), fill=(40, 230, 60) if visible else (230, 40, 40))
        segmentation = _CLASS_COLOURS[np.minimum(labels["segmentation"][int(sample)], len(_CLASS_COLOURS) - 1)]
        rows.append(np.concatenate([np.asarray(render), np.asarray(
            Image.fromarray(segmentation).resize((tile, tile), Image.NEAREST))], axis=1))
    pairs = [np.concatenate(rows[k:k + 2], axis=1) if k + 1 < len(rows) else
             np.concatenate([rows[k], np.zeros_like(rows[k])], axis=1) for k in range(0, len(rows), 2)]
    return Image.fromarray(np.concatenate(pairs, axis=0))


def provenance_lines(sources: list[str]) -> list[str]:
    """Where the identities' portraits came from: their folders, and any provenance file there."""
    generated = [source for source in sources if source.startswith("generate:")]
    lines = [f"- {len(generated)} faces of avatarflow's own production GAN, refined by its diffusion model: "
             + ", ".join(generated[:12]) + (", …" if len(generated) > 12 else "")] if generated else []
    sources = [source for source in sources if not source.startswith("generate:")]
    folders: dict[str, list[str]] = {}
    for source in sources:
        location = DataLocation(source)
        folders.setdefault(location.parent.url, []).append(location.name)
    for folder, names in sorted(folders.items()):
        names = sorted(names)
        lines.append(f"- `{folder}`: {len(names)} portraits ({', '.join(names[:12])}{', …' if len(names) > 12 else ''})")
        found = next((place.join(name) for name in PROVENANCE_FILES for place in _folder_and_parent(folder)
                      if place.join(name).exists()), None)
        if found is not None:
            text = found.read_text().strip()
            lines += [f"  - {found.name} (`{found.url}`):", "", *("    > " + line for line in text.splitlines()[:60]), ""]
    return lines


def _folder_and_parent(folder: str) -> list[DataLocation]:
    location = DataLocation(folder)
    try:
        return [location, location.parent]
    except ValueError:  # a bucket's top level has no folder above it
        return [location]


def write_card(dataset_dir: str) -> DataLocation:
    """card.md and card_grid.png in the data set's folder; returns the card's path."""
    store = SyntheticStore(dataset_dir)
    index = store.index()
    attrs = dict(store.labels().attrs)
    summary, settings = attrs["summary"], attrs["settings"]
    config = settings["config"]
    grid = io.BytesIO()
    sample_grid(store, index).save(grid, format="PNG")
    store.write_file(GRID, grid.getvalue())
    lines = [
        f"# Synthetic face data set `{store.root.name}`", "",
        f"{summary['images']} images of {summary['identities']} identities at {config['resolution']}², "
        f"rendered by avatarflow's `synthesize` (Blender Cycles, {config['cycles_samples']} samples per pixel, "
        f"{'denoised' if config.get('denoise') else 'not denoised'}), seed {settings['seed']}.", "",
        "## Files", "",
        ("- `images/*.png`: the renders" if config.get("image_format", "png") == "png" else
         f"- `images.zarr`: the renders, one ({settings['n_samples']}, {config['resolution']}, {config['resolution']}, 3) "
         "uint8 array (rows not rendered are zeros)") + "; `index.parquet`: one row per image (`sample`, `image`, `identity`, `split`, "
        "`yaw_deg`, `pitch_deg`, `emotion`, `visible_landmarks`, `source`, `shape`)",
        "- `labels.zarr`: " + ", ".join(f"`{name}` {tuple(array.shape)}" for name, array in _arrays(store)),
        f"- segmentation classes: {', '.join(f'{k} {name}' for k, name in enumerate(attrs['segmentation_classes']))}",
        "", "## Distributions", "",
        f"- images per split (an identity's images all go to one): {summary['splits']}",
        f"- emotions the expressions started from: {summary['emotions']}",
        f"- visible landmarks per image: {summary['visible_landmarks']}",
        f"- class share of all pixels: {summary['class_share']}",
        *([f"- share of the face's outline that meets head or hair (the rest is the face's own silhouette "
           f"against the background): {summary['head_border_share']}"] if "head_border_share" in summary else []),
        f"- head yaw against the line of sight (requested {config['yaw']}):", "",
        *histogram_lines(index["yaw_deg"], -90.0, 90.0, 15.0), "",
        f"- head pitch (requested {config['pitch']}):", "",
        *histogram_lines(index["pitch_deg"], -45.0, 45.0, 7.5), "",
        f"- label checks: {'all passed' if not summary['failed_checks'] else summary['failed_checks']}",
        f"- identities skipped (no usable face): {summary['failed_identities'] or 'none'}",
        "", "## Samples", "", f"![samples]({GRID}) (render with visible landmarks green and hidden ones red; "
        "segmentation)", "", "## Provenance", "",
        *provenance_lines(list(index.drop_duplicates("identity")["source"])), "",
        shape_line(settings, index), "",
        "## Settings", "", *(f"- `{key}`: {json.dumps(value)}" for key, value in settings["config"].items()), "",
    ]
    return store.write_file(CARD, "\n".join(lines).encode("utf-8"))


def shape_line(settings: dict, index: pd.DataFrame) -> str:
    """Where the identities' face shapes came from (the index's coefficients say whether they moved)."""
    config, record = settings["config"], settings.get("shape_model") or {"faces": 0}
    if "shape" in index and index["shape"].map(len).gt(0).any():
        return (f"Face shapes: each identity's reconstructed face moved along the {config['shape_components']} main "
                f"components of {record['faces']} training faces' aligned landmark shapes (data sets "
                f"{', '.join(record['data_sets'])} of the data dir), each coefficient drawn with a spread of "
                f"{config['shape_variation']:g} of the training faces' own and clipped at ±2.5; the coefficients are "
                "the index's `shape` column, in standard deviations of `shape_model.zarr` (`mean` and `components` "
                "in 128² template pixels, `deviations`).")
    return "Face shapes: as reconstructed from each portrait (no training faces to vary them along)."


def _arrays(store: SyntheticStore):
    labels = store.labels()
    for name, array in labels.arrays():
        yield name, array
    for group_name, group in labels.groups():
        for name, array in group.arrays():
            yield f"{group_name}/{name}", array
