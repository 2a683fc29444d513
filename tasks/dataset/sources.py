"""Where dataset faces come from: image and video files found in folders or listed in manifests."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal

import av
import numpy as np

from stores.manifest import ManifestError, read_manifest

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi")
MANIFEST_EXTENSIONS = (".csv", ".parquet", ".pq")

# `<sex>_<group>_<uuid>.<ext>`, as in the synthetic faces set.
_LABELLED_NAME = re.compile(r"^((?:female|male)_[a-z]+)_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Source:
    """One image or video file and the label its samples are balanced by."""

    path: str
    kind: Literal["image", "video"]
    label: str


def media_kind(path: str | Path) -> Literal["image", "video"] | None:
    """"image" or "video" by file extension, or None for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def label_from_name(path: str | Path) -> str:
    """`female_asian_<uuid>.jpg` → "female_asian"; any other file → the name of its folder
    (e.g. "portraits", "video"), or its kind when the folder has no name."""
    path = Path(path)
    match = _LABELLED_NAME.match(path.stem.lower())
    if match:
        return match.group(1)
    return path.parent.name or media_kind(path) or "unlabelled"


def _source(path: Path) -> Source:
    kind = media_kind(path)
    assert kind is not None
    return Source(path=str(path), kind=kind, label=label_from_name(path))


def _from_manifest(path: Path) -> list[Source]:
    try:
        table = read_manifest(path)
    except ManifestError as error:
        raise ValueError(f"--data {path}: {error}") from None
    sources = []
    for row in table.rows:
        portrait = row.get("portrait")
        if not portrait:
            continue
        file = Path(portrait)
        file = file if file.is_absolute() else table.folder / file
        if media_kind(file) and file.is_file():
            sources.append(_source(file))
    return sources


def find_sources(paths: list[str]) -> list[Source]:
    """Image and video files in folders (searched recursively) or manifests (their `portrait`
    column, relative to the manifest's folder), in a stable order without duplicates.

    Raises ValueError for a path that does not exist or yields no image or video.
    """
    if not paths:
        raise ValueError("no dataset paths given")
    found: dict[str, Source] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise ValueError(f"--data {raw}: no such file or folder")
        if path.is_dir():
            sources = [_source(file) for file in sorted(path.rglob("*")) if media_kind(file) and file.is_file()]
        elif path.suffix.lower() in MANIFEST_EXTENSIONS:
            sources = _from_manifest(path)
        elif media_kind(path):
            sources = [_source(path)]
        else:
            raise ValueError(f"--data {raw}: not a folder, a manifest (.csv, .parquet) or an image or video file")
        if not sources:
            raise ValueError(f"--data {raw}: holds no images ({', '.join(IMAGE_EXTENSIONS)}) "
                             f"or videos ({', '.join(VIDEO_EXTENSIONS)})")
        for source in sources:
            found.setdefault(source.path, source)
    return list(found.values())


def balanced_weights(labels: list[str]) -> np.ndarray:
    """Sampling weights, one per item, giving every distinct label the same total weight; sums to 1."""
    if len(labels) == 0:
        raise ValueError("balanced_weights needs at least one label")
    names, index, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True,
                                     return_counts=True)
    return 1.0 / (len(names) * counts[index].astype(np.float64))


def video_frame_count(path: str | Path, stride: int, max_frames: int) -> int:
    """Frames `iter_video_frames` will yield, from the container's metadata (decoding only when
    the container does not say)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames
        if not total and stream.duration and stream.average_rate:
            total = int(float(stream.duration * stream.time_base) * float(stream.average_rate))
    if not total:
        return sum(1 for _ in iter_video_frames(path, stride, max_frames))
    return min(max_frames, -(-total // stride))


def iter_video_frames(path: str | Path, stride: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Every `stride`-th decoded frame of a video's first video stream, H×W×3 uint8 RGB, at most
    `max_frames` of them."""
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    yielded = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for number, frame in enumerate(container.decode(stream)):
            if max_frames is not None and yielded >= max_frames:
                break
            if number % stride == 0:
                yield frame.to_ndarray(format="rgb24")
                yielded += 1


def sources_fingerprint(sources: list[Source], settings: dict) -> str:
    """A hash of the sources (path, size, modification time) and the build settings: equal
    fingerprints mean a dataset can be reused."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for source in sources:
        stat = Path(source.path).stat()
        digest.update(json.dumps([asdict(source), stat.st_size, stat.st_mtime_ns]).encode())
    return digest.hexdigest()[:16]
