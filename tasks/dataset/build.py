"""Build the aligned face dataset: detect, align, crop and unwrap every sampled image and video frame."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image

from tasks.common.errors import AvatarInputError
from tasks.dataset.align import align_face, alignment_template
from tasks.dataset.config import DatasetConfig
from tasks.dataset.detect import FaceMeshDetector
from tasks.dataset.sources import Source, balanced_weights, iter_video_frames, video_frame_count
from tasks.reconstruct.unwrap import CanonicalUnwrapper
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_image
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.topology import face_topology

PROGRESS_EVERY = 100
"""Images between two progress callbacks."""


@dataclass
class FaceExample:
    """One aligned face."""

    crops: dict[int, np.ndarray]
    """Crop side → S×S×3 uint8 aligned crop."""

    uv_texture: np.ndarray
    """U×U×3 uint8: the largest crop unwrapped into the canonical UV layout."""

    landmarks: np.ndarray
    """(478, 2) float32 landmarks in the largest crop's pixels."""


@dataclass
class FaceDataset:
    """Aligned faces as stacked arrays, one row per face."""

    crops: dict[int, np.ndarray]
    """Crop side → N×S×S×3 uint8."""

    uv_textures: np.ndarray
    """N×U×U×3 uint8 canonical-UV textures."""

    landmarks: np.ndarray
    """N×478×2 float32 landmarks in the largest crop's pixels."""

    labels: list[str]
    """The balancing label of each face."""

    sources: list[str]
    """The file of each face; video frames as `<path>#<frame number>`."""

    skipped: dict[str, int] = field(default_factory=dict)
    """Sampled images left out, by reason: "no_face", "unreadable"."""

    def __len__(self) -> int:
        return len(self.labels)

    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


@dataclass(frozen=True)
class SampleItem:
    """One image, or one frame of a video (its position among the frames the stride keeps)."""

    source: Source
    frame_slot: int | None = None


def canonical_unwrap_mesh() -> tuple[np.ndarray, np.ndarray]:
    """The triangles and canonical UVs the reconstruct stage unwraps photos with: (faces, uv_canonical)."""
    topology = face_topology()
    faces = topology.faces
    if ReconstructConfig().fill_eye_holes:
        faces = np.concatenate([faces, topology.eye_fill_faces])
    return faces, topology.uv_canonical


@lru_cache(maxsize=4)
def canonical_unwrapper(size: int) -> CanonicalUnwrapper:
    """The unwrap into the reconstruct stage's canonical UV layout at size×size (built once)."""
    faces, uv_canonical = canonical_unwrap_mesh()
    return CanonicalUnwrapper(faces, uv_canonical, size)


def make_face_example(image_u8: np.ndarray, landmarks_px: np.ndarray, config: DatasetConfig) -> FaceExample:
    """Align one detected face: crops of every configured size and its canonical-UV texture."""
    size = config.largest_crop
    template = alignment_template(size, config.face_scale, config.eye_height)
    aligned = align_face(image_u8, landmarks_px, size, template)
    crops = {size: aligned.crop}
    for smaller in config.crop_sizes:
        if smaller != size:
            crops[smaller] = np.asarray(Image.fromarray(aligned.crop).resize((smaller, smaller), Image.LANCZOS))
    uv_texture = canonical_unwrapper(config.uv_size)(aligned.crop, aligned.landmarks)
    return FaceExample(crops=crops, uv_texture=uv_texture, landmarks=aligned.landmarks[:, :2].astype(np.float32))


def plan_items(sources: list[Source], config: DatasetConfig) -> list[SampleItem]:
    """Every image and kept video frame, or under `max_images` a sample of them balanced by label
    (seeded), in source order so each video is decoded once."""
    items: list[SampleItem] = []
    for source in sources:
        if source.kind == "image":
            items.append(SampleItem(source))
            continue
        try:
            count = video_frame_count(source.path, config.video_frame_stride, config.max_frames_per_video)
        except Exception:  # an unreadable video still counts as one skipped item when built
            count = 1
        items.extend(SampleItem(source, slot) for slot in range(count))
    if config.max_images is not None and len(items) > config.max_images:
        rng = np.random.default_rng(config.seed)
        weights = balanced_weights([item.source.label for item in items])
        chosen = np.sort(rng.choice(len(items), size=config.max_images, replace=False, p=weights))
        items = [items[i] for i in chosen]
    return items


def _frames(source: Source, slots: list[int | None], config: DatasetConfig):
    """(source name, RGB image) for the wanted items of one source; an image that cannot be
    decoded gives None in its place."""
    if source.kind == "image":
        try:
            yield source.path, load_image(source.path, IngestConfig())
        except AvatarInputError:
            yield source.path, None
        return
    wanted = set(slots)
    done = set()
    try:
        frames = iter_video_frames(source.path, config.video_frame_stride, config.max_frames_per_video)
        for slot, frame in enumerate(frames):
            if slot in wanted:
                done.add(slot)
                yield f"{source.path}#{slot * config.video_frame_stride}", frame
            if len(done) == len(wanted):
                break
    except Exception:  # PyAV raises many error types for corrupt containers
        pass
    for slot in sorted(wanted - done):
        yield f"{source.path}#{slot * config.video_frame_stride}", None


def build_face_dataset(sources: list[Source], config: DatasetConfig = DatasetConfig(),
                       progress: Callable[[int, int], None] | None = None) -> FaceDataset:
    """Detect, align and unwrap the faces of `sources` (see `plan_items` for which are used).

    progress(done, total) is called every PROGRESS_EVERY items and once at the end.
    """
    items = plan_items(sources, config)
    slots_by_source: dict[Source, list[int | None]] = {}
    for item in items:
        slots_by_source.setdefault(item.source, []).append(item.frame_slot)
    total = len(items)
    uv_size = config.uv_size
    crops = {s: np.zeros((total, s, s, 3), np.uint8) for s in config.crop_sizes}
    uv_textures = np.zeros((total, uv_size, uv_size, 3), np.uint8)
    landmarks = np.zeros((total, 478, 2), np.float32)
    labels: list[str] = []
    names: list[str] = []
    skipped = {"no_face": 0, "unreadable": 0}

    done = 0
    with FaceMeshDetector(config.min_detection_confidence, config.detection_upscale_below) as detector:
        for source, slots in slots_by_source.items():
            for name, image in _frames(source, slots, config):
                done += 1
                if image is None:
                    skipped["unreadable"] += 1
                else:
                    found = detector.detect(image)
                    if found is None:
                        skipped["no_face"] += 1
                    else:
                        example = make_face_example(image, found, config)
                        row = len(labels)
                        for s in config.crop_sizes:
                            crops[s][row] = example.crops[s]
                        uv_textures[row] = example.uv_texture
                        landmarks[row] = example.landmarks
                        labels.append(source.label)
                        names.append(name)
                if progress is not None and done % PROGRESS_EVERY == 0:
                    progress(done, total)
    if progress is not None:
        progress(done, total)
    kept = len(labels)

    def trimmed(array: np.ndarray) -> np.ndarray:
        return array if kept == total else array[:kept].copy()
    return FaceDataset(crops={s: trimmed(a) for s, a in crops.items()}, uv_textures=trimmed(uv_textures),
                       landmarks=trimmed(landmarks), labels=labels, sources=names, skipped=skipped)
