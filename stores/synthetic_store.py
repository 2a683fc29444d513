"""A synthetic data set's store, `<data>/synthetic/<name>/`:

- `images/<identity>_<sample>.png`, the renders;
- `labels.zarr`, N-first label arrays, chunked along N by shard so that every shard writes whole
  chunks of its own and shards can be written by many workers at once;
- `shards/<k>.json`, written after a shard's images and labels, so a resumed run renders only the
  shards that lack one;
- `index.parquet`, one row per rendered sample, written when every shard is done.

The group's attrs hold the settings the arrays were made for; opening a data set again with other
settings is refused instead of mixing two data sets in one store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

LABELS = "labels.zarr"
INDEX = "index.parquet"
IMAGES = "images"
SHARDS = "shards"


class DataSetMismatch(ValueError):
    """The data set's folder holds a data set made with other settings."""


def label_shapes(resolution: int, n_landmarks: int, n_weights: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-sample shape and dtype of every label array."""
    side = resolution
    return {
        "landmarks_2d": ((n_landmarks, 2), "float32"),
        "landmarks_3d": ((n_landmarks, 3), "float32"),
        "visible": ((n_landmarks,), "bool"),
        "depth": ((side, side), "float32"),
        "normals": ((side, side, 3), "float16"),
        "segmentation": ((side, side), "uint8"),
        "weights": ((n_weights,), "float32"),
        "head_pose": ((6,), "float32"),
        "camera/intrinsics": ((3, 3), "float32"),
        "camera/extrinsics": ((3, 4), "float32"),
        "rendered": ((), "bool"),
    }


class SyntheticStore:
    """Create, fill and read one synthetic data set."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def images(self) -> Path:
        return self.root / IMAGES

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Raise DataSetMismatch when the folder holds a data set made with other settings."""
        if not (self.root / LABELS).exists():
            return
        found = dict(zarr.open_group(self.root / LABELS, mode="r").attrs).get("settings")
        wanted = json.loads(json.dumps(settings))
        if found is not None and found != wanted:
            changed = sorted(key for key in set(found) | set(wanted) if found.get(key) != wanted.get(key))
            raise DataSetMismatch(f"{self.root} holds a data set made with other settings ({', '.join(changed)}); "
                                  "choose another --name or remove that folder")

    def create(self, n_samples: int, chunk: int, shapes: dict[str, tuple[tuple[int, ...], str]],
               settings: dict[str, Any]) -> zarr.Group:
        """The label group, made now or found with the same settings (a resumed run). `settings`
        must hold n_samples and the chunk too."""
        self.check_settings(settings)
        self.images.mkdir(parents=True, exist_ok=True)
        (self.root / SHARDS).mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(self.root / LABELS, mode="a")
        wanted = json.loads(json.dumps(settings))
        for name, (shape, dtype) in shapes.items():
            if name not in group:
                group.create_array(name, shape=(n_samples, *shape), chunks=(chunk, *shape), dtype=dtype,
                                   fill_value=0)
        group.attrs["settings"] = wanted
        return group

    def work_dir(self, shard: int) -> Path:
        """Scratch space of a shard's try (Blender's job, passes), removed when the shard is written."""
        return self.root / "work" / f"{shard:05d}"

    def labels(self) -> zarr.Group:
        return zarr.open_group(self.root / LABELS, mode="r")

    def write_shard(self, shard: int, start: int, arrays: dict[str, np.ndarray], record: dict[str, Any]) -> None:
        """A shard's label rows [start, start + n), then its record (the shard's completion mark)."""
        group = zarr.open_group(self.root / LABELS, mode="a")
        for name, values in arrays.items():
            group[name][start:start + len(values)] = values
        path = self.shard_record_path(shard)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
        partial.replace(path)

    def shard_record_path(self, shard: int) -> Path:
        return self.root / SHARDS / f"{shard:05d}.json"

    def shard_records(self) -> dict[int, dict]:
        """The records of the shards that finished."""
        records = {}
        for path in sorted((self.root / SHARDS).glob("*.json")):
            records[int(path.stem)] = json.loads(path.read_text(encoding="utf-8"))
        return records

    def write_index(self, rows: list[dict[str, Any]], attrs: dict[str, Any]) -> Path:
        """index.parquet from the shards' sample rows, and the summary in the label group's attrs."""
        frame = pd.DataFrame(rows).sort_values("sample").reset_index(drop=True)
        path = self.root / INDEX
        partial = path.with_suffix(".parquet.partial")
        frame.to_parquet(partial, index=False)
        partial.replace(path)
        group = zarr.open_group(self.root / LABELS, mode="a")
        group.attrs.update(attrs)
        return path

    def index(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / INDEX)
