"""A synthetic data set's store, `<data>/synthetic/<name>/`, local or behind an fsspec URL:

- `images/<identity>_<sample>.png`, the renders, or with `--format zarr` `images.zarr`, one
  N×H×W×3 uint8 array chunked like the labels;
- `labels.zarr`, N-first label arrays, chunked along N by shard so that every shard writes whole
  chunks of its own and shards can be written by many workers at once;
- `shards/<k>.json`, written after a shard's images and labels, so a resumed run renders only the
  shards that lack one;
- `index.parquet`, one row per rendered sample, written when every shard is done;
- `shape_model.zarr`, the face-shape model the identities were moved along (when they were), so
  the index's `shape` coefficients can be read without the training data.

The group's attrs hold the settings the arrays were made for; opening a data set again with other
settings is refused instead of mixing two data sets in one store."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr
from PIL import Image

from stores.avatar_store import open_zarr_store
from stores.location import DataLocation

LABELS = "labels.zarr"
INDEX = "index.parquet"
IMAGES = "images"
IMAGE_ARRAY = "images.zarr"
SHARDS = "shards"
SHAPE_MODEL = "shape_model.zarr"


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

    def __init__(self, root: str | os.PathLike | DataLocation):
        self.root = DataLocation(root)
        self._images_read: zarr.Array | None = None  # opened once: each open is a request on an object store

    def _labels(self, mode: str) -> zarr.Group:
        return zarr.open_group(store=open_zarr_store(self.root.join(LABELS).url), mode=mode)

    def exists(self) -> bool:
        return self.root.join(LABELS, "zarr.json").exists()

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Raise DataSetMismatch when the folder holds a data set made with other settings."""
        if not self.exists():
            return
        found = dict(self._labels("r").attrs).get("settings")
        wanted = json.loads(json.dumps(settings))
        if found is not None and found != wanted:
            changed = sorted(key for key in set(found) | set(wanted) if found.get(key) != wanted.get(key))
            raise DataSetMismatch(f"{self.root} holds a data set made with other settings ({', '.join(changed)}); "
                                  "choose another --name or remove that folder")

    def _image_array(self, mode: str) -> zarr.Array:
        return zarr.open_array(store=open_zarr_store(self.root.join(IMAGE_ARRAY).url), mode=mode)

    def create(self, n_samples: int, chunk: int, shapes: dict[str, tuple[tuple[int, ...], str]],
               settings: dict[str, Any], image_shape: tuple[int, ...] | None = None) -> zarr.Group:
        """The label group, made now or found with the same settings (a resumed run), and with an
        `image_shape` (H, W, 3) the image array. `settings` must hold n_samples and the chunk too."""
        self.check_settings(settings)
        self.root.ensure_folder()
        if image_shape is not None and not self.root.join(IMAGE_ARRAY, "zarr.json").exists():
            zarr.create_array(store=open_zarr_store(self.root.join(IMAGE_ARRAY).url), shape=(n_samples, *image_shape),
                              chunks=(chunk, *image_shape), dtype="uint8", fill_value=0)
        group = self._labels("a")
        for name, (shape, dtype) in shapes.items():
            if name not in group:
                group.create_array(name, shape=(n_samples, *shape), chunks=(chunk, *shape), dtype=dtype,
                                   fill_value=0)
        group.attrs["settings"] = json.loads(json.dumps(settings))
        return group

    def labels(self) -> zarr.Group:
        return self._labels("r")

    def put_images(self, images: dict[str, Path]) -> None:
        """Copy rendered files in: {name inside images/: local file}."""
        for name, path in images.items():
            self.root.join(IMAGES, name).put_file(path)

    def put_image_rows(self, start: int, images: np.ndarray) -> None:
        """Rows [start, start + n) of the image array: whole chunks, one shard's."""
        self._image_array("r+")[start:start + len(images)] = images

    def read_image(self, image: str) -> np.ndarray:
        """An H×W×3 uint8 render by the index's `image` column: a PNG's path inside the data set,
        or `images.zarr/<sample>`."""
        folder, _, sample = image.partition("/")
        if folder == IMAGE_ARRAY:
            if self._images_read is None:
                self._images_read = self._image_array("r")
            return np.asarray(self._images_read[int(sample)])
        with Image.open(io.BytesIO(self.root.join(image).read_bytes())) as picture:
            return np.asarray(picture.convert("RGB"))

    def write_shard(self, shard: int, start: int, arrays: dict[str, np.ndarray], record: dict[str, Any]) -> None:
        """A shard's label rows [start, start + n), then its record (the shard's completion mark)."""
        group = self._labels("a")
        for name, values in arrays.items():
            group[name][start:start + len(values)] = values
        self.shard_record(shard).write_text(json.dumps(record, indent=1))

    def shard_record(self, shard: int) -> DataLocation:
        return self.root.join(SHARDS, f"{shard:05d}.json")

    def shard_records(self) -> dict[int, dict]:
        """The records of the shards that finished."""
        folder = self.root.join(SHARDS)
        records = {}
        for path in sorted(folder.fs.glob(folder.fs_path + "/*.json")):
            record = json.loads(folder.fs.cat_file(path).decode("utf-8"))
            records[int(record["shard"])] = record
        return records

    def write_index(self, rows: list[dict[str, Any]], attrs: dict[str, Any]) -> DataLocation:
        """index.parquet from the shards' sample rows, and the summary in the label group's attrs."""
        frame = pd.DataFrame(rows).sort_values("sample").reset_index(drop=True)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        location = self.root.join(INDEX).write_bytes(buffer.getvalue())
        self._labels("a").attrs.update(attrs)
        return location

    def index(self) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.root.join(INDEX).read_bytes()))

    def write_shape_model(self, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        """The shape model's arrays and attrs, replacing any stored one (a resumed run writes the same)."""
        group = zarr.open_group(store=open_zarr_store(self.root.join(SHAPE_MODEL).url), mode="w")
        for name, values in arrays.items():
            group.create_array(name, data=np.asarray(values))
        group.attrs.update(json.loads(json.dumps(attrs)))

    def read_shape_model(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The stored shape model's arrays and attrs, or None when the faces were not moved."""
        if not self.root.join(SHAPE_MODEL, "zarr.json").exists():
            return None
        group = zarr.open_group(store=open_zarr_store(self.root.join(SHAPE_MODEL).url), mode="r")
        return {name: np.asarray(array[...]) for name, array in group.arrays()}, dict(group.attrs)

    def write_file(self, name: str, data: bytes) -> DataLocation:
        """A file beside the data (the card)."""
        return self.root.join(name).write_bytes(data)
