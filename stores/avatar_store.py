"""The Zarr avatar store: one group per run and avatar, `runs/<run>/<avatar>/`.

Tasks write arrays here and pass small `ArrayRef`s around instead of arrays. The store URL can be a
local path, any fsspec URL (``s3://…``, ``gs://…``) or ``memory://<name>`` for tests, which lives in
the current process only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.errors
import zarr.storage

_MEMORY_STORES: dict[str, zarr.storage.MemoryStore] = {}
_MEMORY_LOCK = threading.Lock()


@dataclass(frozen=True)
class ArrayRef:
    """Where one array lives, small enough to travel through Prefect and Dask."""

    store_url: str
    group: str
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class StageRef:
    """What a stage task returns: the avatar's group and the arrays it wrote."""

    store_url: str
    run: str
    avatar: str
    stage: str
    seconds: float
    arrays: dict[str, ArrayRef] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def open_zarr_store(url: str) -> zarr.abc.store.Store:
    """Return the zarr store behind a URL: memory://name, an fsspec URL, or a local path."""
    if url.startswith("memory://"):
        with _MEMORY_LOCK:
            return _MEMORY_STORES.setdefault(url, zarr.storage.MemoryStore())
    if "://" in url and not url.startswith("file://"):
        return zarr.storage.FsspecStore.from_url(url)
    path = Path(url.removeprefix("file://"))
    path.mkdir(parents=True, exist_ok=True)
    return zarr.storage.LocalStore(path)


class AvatarStore:
    """Read and write one avatar's arrays and status under `runs/<run>/<avatar>/`."""

    def __init__(self, url: str):
        self.url = url
        store = open_zarr_store(url)
        try:
            self._root = zarr.open_group(store=store, mode="a")
        except zarr.errors.ContainsGroupError:  # two runs on a fresh store: the other created the root first
            self._root = zarr.open_group(store=store, mode="r+")

    @staticmethod
    def group_path(run: str, avatar: str) -> str:
        return f"runs/{run}/{avatar}"

    def avatar_group(self, run: str, avatar: str) -> zarr.Group:
        return self._root.require_group(self.group_path(run, avatar))

    def prepare_avatar(self, run: str, avatar: str, row: dict[str, Any], fingerprint: str = "") -> None:
        """Start (or restart) an avatar: fresh stage records and attrs, created before fan-out so
        workers never create parent groups."""
        group = self.avatar_group(run, avatar)
        if "stages" in group:
            del group["stages"]
        group.require_group("stages")
        group.attrs.put({"manifest_row": row, "fingerprint": fingerprint, "complete": False})

    def fail_before_stages(self, run: str, avatar: str, row: dict[str, Any], fingerprint: str, stage: str,
                           message: str) -> None:
        """Restart an avatar that failed a check before any stage ran (planning found its input file
        missing): its row and error in one metadata write, where prepare_avatar and mark_failed take
        several, which counts on a manifest of thousands of such rows."""
        group = self.avatar_group(run, avatar)
        if "stages" in group:
            del group["stages"]
        group.attrs.put({"manifest_row": row, "fingerprint": fingerprint, "complete": False, "stages": {},
                         "error": {"stage": stage, "message": message}})

    def write(
        self,
        run: str,
        avatar: str,
        name: str,
        array: np.ndarray,
        chunks: tuple[int, ...] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> ArrayRef:
        """Write (or overwrite) one array, e.g. name="mesh/vertices"."""
        array = np.ascontiguousarray(array)
        group = self.avatar_group(run, avatar)
        created = group.create_array(
            name,
            shape=array.shape,
            dtype=array.dtype,
            chunks=chunks or array.shape or (1,),
            overwrite=True,
        )
        created[...] = array
        if attrs:
            created.attrs.update(attrs)
        return ArrayRef(self.url, self.group_path(run, avatar), name, tuple(array.shape), str(array.dtype))

    def create(self, run: str, avatar: str, name: str, shape: tuple[int, ...], dtype, chunks: tuple[int, ...]) -> zarr.Array:
        """Create an empty array to fill piece by piece (whole chunks only, from one writer)."""
        return self.avatar_group(run, avatar).create_array(name, shape=shape, dtype=dtype, chunks=chunks, overwrite=True)

    def ref(self, run: str, avatar: str, name: str) -> ArrayRef:
        array = self.avatar_group(run, avatar)[name]
        return ArrayRef(self.url, self.group_path(run, avatar), name, tuple(array.shape), str(array.dtype))

    def read(self, run: str, avatar: str, name: str) -> np.ndarray:
        return np.asarray(self.avatar_group(run, avatar)[name][...])

    def array_attrs(self, run: str, avatar: str, name: str) -> dict[str, Any]:
        return dict(self.avatar_group(run, avatar)[name].attrs)

    def attrs(self, run: str, avatar: str) -> dict[str, Any]:
        return dict(self.avatar_group(run, avatar).attrs)

    def update_attrs(self, run: str, avatar: str, **values: Any) -> None:
        self.avatar_group(run, avatar).attrs.update(values)

    def record_stage(self, run: str, avatar: str, stage: str, status: str, seconds: float, **extra: Any) -> None:
        """Record a stage's status and timing in its own `stages/<stage>` group: stages that run in
        parallel for one avatar never rewrite the same metadata document."""
        record = {"status": status, "seconds": round(seconds, 4), "finished_at": time.time(), **extra}
        self.avatar_group(run, avatar).require_group(f"stages/{stage}").attrs.update(record)

    def stage_records(self, run: str, avatar: str) -> dict[str, dict[str, Any]]:
        group = self.avatar_group(run, avatar)
        if "stages" not in group:
            return {}
        return {name: dict(sub.attrs) for name, sub in group["stages"].groups()}

    def is_complete(self, run: str, avatar: str, fingerprint: str | None = None) -> bool:
        """True when the avatar finished (and, given a fingerprint, was built from the same inputs)."""
        try:
            group = self._root[self.group_path(run, avatar)]
        except KeyError:
            return False
        if fingerprint is not None and group.attrs.get("fingerprint") != fingerprint:
            return False
        return bool(group.attrs.get("complete", False))

    def mark_complete(self, run: str, avatar: str, outputs: dict[str, str], **summary: Any) -> None:
        """Gather the stage records into the group's attrs with the outputs, then set `complete`,
        always as the very last write."""
        group = self.avatar_group(run, avatar)
        group.attrs.update({"stages": self.stage_records(run, avatar), "outputs": outputs, **summary})
        group.attrs["complete"] = True

    def mark_failed(self, run: str, avatar: str, stage: str, message: str) -> None:
        self.update_attrs(run, avatar, complete=False, stages=self.stage_records(run, avatar),
                          error={"stage": stage, "message": message})
