"""Dataset task: folders and manifests of images and videos → an aligned face dataset in Zarr,
reused while its sources and settings are unchanged."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stores.dataset_store import DatasetStore
from tasks.dataset.build import build_face_dataset
from tasks.dataset.config import DatasetConfig
from tasks.dataset.sources import find_sources, sources_fingerprint
from tasks.quality.metrics import normalised_shape


@dataclass(frozen=True)
class DatasetRef:
    """Where a built dataset lives and what it holds."""

    store_url: str
    name: str
    n_images: int
    label_counts: dict[str, int]
    fingerprint: str
    seconds: float
    reused: bool


@task(name="build-dataset", cache_policy=NO_CACHE, persist_result=False)
def build_dataset(data: list[str], store_url: str, config: DatasetConfig, name: str = "faces") -> DatasetRef:
    logger = get_run_logger()
    started = time.perf_counter()
    sources = find_sources(data)
    fingerprint = sources_fingerprint(sources, dataclasses.asdict(config))
    store = DatasetStore(store_url)
    if store.exists(name, fingerprint):
        attrs = store.attrs(name)
        logger.info(f"dataset {name}: reusing {attrs['n_images']} faces (sources and settings unchanged)")
        return DatasetRef(store_url, name, int(attrs["n_images"]), dict(attrs["label_counts"]), fingerprint,
                          time.perf_counter() - started, reused=True)
    logger.info(f"dataset {name}: {len(sources)} files from {len(data)} location(s)")

    def progress(done: int, total: int) -> None:
        logger.info(f"dataset {name}: {done}/{total} images ({time.perf_counter() - started:.0f}s)")
    dataset = build_face_dataset(sources, config, progress)
    if len(dataset) == 0:
        raise ValueError(f"no face was found in any of the {len(sources)} files given with --data")
    store.write(name, dataset, attrs={"fingerprint": fingerprint, "config": dataclasses.asdict(config),
                                      "locations": list(data)})
    counts = dataset.label_counts()
    logger.info(f"dataset {name}: {len(dataset)} faces, skipped {dataset.skipped}, labels {counts}")
    return DatasetRef(store_url, name, len(dataset), counts, fingerprint, time.perf_counter() - started, reused=False)


def reference_shapes(store: DatasetStore, name: str, limit: int = 2000, seed: int = 0) -> np.ndarray:
    """Normalised landmark shapes of (up to `limit`) training faces, for the Fréchet distance."""
    landmarks = store.read_landmarks(name)
    if len(landmarks) > limit:
        landmarks = landmarks[np.sort(np.random.default_rng(seed).choice(len(landmarks), limit, replace=False))]
    return np.stack([normalised_shape(points) for points in landmarks])
