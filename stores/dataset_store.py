"""The Zarr face dataset store: one group per dataset, `datasets/<name>/`.

Arrays: `crops_<S>` (N×S×S×3 uint8, one per crop size), `uv` (N×U×U×3 uint8 canonical-UV
textures), `landmarks` (N×478×2 float32, largest crop's pixels), `labels` and `sources` (N
strings). The group's attrs hold the label counts, source count, skip counts, build config and
the fingerprint of the inputs, and a `complete` flag written last. The URL is a local path, an
fsspec URL or ``memory://<name>``, as for the avatar store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from stores.avatar_store import open_zarr_store

if TYPE_CHECKING:
    from tasks.dataset.build import FaceDataset

CHUNK_IMAGES = 256
"""Images per chunk along the first axis of every dataset array."""


class DatasetStore:
    """Write and read aligned face datasets under `datasets/<name>/`."""

    def __init__(self, url: str):
        self.url = url
        self._root = zarr.open_group(store=open_zarr_store(url), mode="a")

    @staticmethod
    def group_path(name: str) -> str:
        return f"datasets/{name}"

    def _group(self, name: str) -> zarr.Group:
        try:
            return self._root[self.group_path(name)]
        except KeyError:
            raise KeyError(f"no dataset named {name!r} in {self.url}") from None

    def _write_array(self, group: zarr.Group, key: str, array: np.ndarray) -> None:
        chunks = (max(1, min(CHUNK_IMAGES, len(array))),) + array.shape[1:]
        created = group.create_array(key, shape=array.shape, dtype=array.dtype if array.dtype != object else str,
                                     chunks=chunks, overwrite=True)
        if len(array):
            created[...] = array

    def write(self, name: str, dataset: FaceDataset, attrs: dict[str, Any] | None = None) -> None:
        """Write (or replace) a dataset; `attrs` (e.g. config, fingerprint) join the summary attrs."""
        path = self.group_path(name)
        if path in self._root:
            del self._root[path]
        group = self._root.require_group(path)
        for size, crops in dataset.crops.items():
            self._write_array(group, f"crops_{size}", np.ascontiguousarray(crops))
        self._write_array(group, "uv", np.ascontiguousarray(dataset.uv_textures))
        self._write_array(group, "landmarks", np.ascontiguousarray(dataset.landmarks, np.float32))
        self._write_array(group, "labels", np.array(dataset.labels, dtype=object).reshape(-1))
        self._write_array(group, "sources", np.array(dataset.sources, dtype=object).reshape(-1))
        summary = {
            "n_images": len(dataset),
            "crop_sizes": sorted(int(s) for s in dataset.crops),
            "uv_size": int(dataset.uv_textures.shape[1]) if dataset.uv_textures.ndim == 4 else None,
            "label_counts": dataset.label_counts(),
            "source_count": len({s.split("#")[0] for s in dataset.sources}),
            "skipped": dict(dataset.skipped),
            **(attrs or {}),
        }
        group.attrs.put({**summary, "complete": False})
        group.attrs["complete"] = True

    def names(self) -> list[str]:
        """Names of the datasets in the store."""
        if "datasets" not in self._root:
            return []
        return sorted(name for name, _ in self._root["datasets"].groups())

    def exists(self, name: str, fingerprint: str | None = None) -> bool:
        """True when the dataset was written completely (and, given a fingerprint, from the same inputs)."""
        try:
            group = self._root[self.group_path(name)]
        except KeyError:
            return False
        if fingerprint is not None and group.attrs.get("fingerprint") != fingerprint:
            return False
        return bool(group.attrs.get("complete", False))

    def attrs(self, name: str) -> dict[str, Any]:
        return dict(self._group(name).attrs)

    def crop_sizes(self, name: str) -> list[int]:
        return sorted(int(key.removeprefix("crops_")) for key, _ in self._group(name).arrays()
                      if key.startswith("crops_"))

    def crops_array(self, name: str, size: int) -> zarr.Array:
        """The lazy N×S×S×3 crop array, for reading in batches."""
        group = self._group(name)
        key = f"crops_{size}"
        if key not in group:
            raise KeyError(f"dataset {name!r} has no {size}px crops; it has {self.crop_sizes(name)}")
        return group[key]

    def read_crops(self, name: str, size: int) -> np.ndarray:
        return np.asarray(self.crops_array(name, size)[...])

    def read_crops_at(self, name: str, size: int) -> np.ndarray:
        """Crops at `size`: the smallest stored side that is a multiple of it, area-averaged down."""
        stored = [s for s in self.crop_sizes(name) if s >= size and s % size == 0]
        if not stored:
            raise ValueError(f"dataset {name!r} has crops of {self.crop_sizes(name)} px; none reduces to {size} px")
        crops = self.read_crops(name, stored[0])
        factor = stored[0] // size
        if factor == 1:
            return crops
        shrunk = crops.reshape(len(crops), size, factor, size, factor, 3).mean(axis=(2, 4), dtype=np.float32)
        return np.round(shrunk).astype(np.uint8)

    def read_uv(self, name: str) -> np.ndarray:
        return np.asarray(self._group(name)["uv"][...])

    def read_landmarks(self, name: str) -> np.ndarray:
        return np.asarray(self._group(name)["landmarks"][...])

    def read_labels(self, name: str) -> list[str]:
        return [str(label) for label in self._group(name)["labels"][...]]

    def read_sources(self, name: str) -> list[str]:
        return [str(source) for source in self._group(name)["sources"][...]]
