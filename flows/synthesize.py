"""The synthesize flow: faces of a folder of portraits → sampled scenes → shards rendered on the
Dask workers → labels checked by great-expectations → index and summary. A shard with a record in
the store is done, so a killed run resumes where it stopped."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.futures import as_completed

from infra.profiles import get_profile, make_task_runner
from stores.expectations import LabelRequirements, validate_synthetic_labels
from stores.synthetic_store import SyntheticStore, label_shapes
from tasks.common.arkit import ARKIT_NAMES
from tasks.reconstruct.topology import N_LANDMARKS
from tasks.synthesize.checks import label_summary, sample_measurements
from tasks.synthesize.config import SynthesisConfig
from tasks.synthesize.labels import SEGMENTATION_CLASSES
from tasks.synthesize.plan import dataset_folder, plan_data_set, production_generators
from tasks.synthesize.render import FaceSources
from tasks.synthesize.shape import load_shape_model, shape_model_record, store_shape_model
from tasks.synthesize.task import synthesize_shard


@flow(name="synthesize")
def synthesize(data_dir: str, name: str = "faces", portraits: str | None = None, identities: int | None = None,
               samples_per_identity: int = 4, seed: int = 0, config: dict | None = None, backgrounds: str | None = None,
               profile: str | None = None, dask_address: str | None = None, workers: int | None = None) -> dict:
    """Render `samples_per_identity` scenes of each identity into `<data_dir>/synthetic/<name>`: the
    first `identities` faces in the `portraits` folder (all by default), or without a folder
    `identities` faces of the production GAN; behind them the sky, or images of the `backgrounds`
    folder. `config`: SynthesisConfig fields to change."""
    portraits = portraits or None  # a deployment's template gives "" for no folder
    backgrounds = backgrounds or None
    execution = get_profile(profile, dask_address, workers)
    settings = SynthesisConfig(**(config or {}))
    render_on = synthesize_shards.with_options(task_runner=make_task_runner(execution))
    return render_on(data_dir, name, portraits, identities, samples_per_identity, seed, settings, backgrounds)


@flow(name="synthesize-shards")
def synthesize_shards(data_dir: str, name: str, portraits: str | None, identities: int | None,
                      samples_per_identity: int, seed: int, config: SynthesisConfig, backgrounds: str | None) -> dict:
    logger = get_run_logger()
    started = time.perf_counter()
    faces, shards, settings = plan_data_set(portraits, identities, samples_per_identity, seed, config,
                                            production_generators(data_dir, portraits), backgrounds,
                                            shape_model_record(data_dir, config.shape_variation))
    store = SyntheticStore(dataset_folder(data_dir, name))
    n_samples = settings["n_samples"]
    store.create(n_samples, settings["chunk"], label_shapes(config.resolution, N_LANDMARKS, len(ARKIT_NAMES)), settings,
                 (config.resolution, config.resolution, 3) if config.image_format == "zarr" else None)
    done = set(store.shard_records())
    pending = [shard for shard in shards if shard.index not in done]
    logger.info(f"{len(faces)} identities x {samples_per_identity} samples = {n_samples} images in "
                f"{len(shards)} shards; {len(shards) - len(pending)} already done")
    shape_model = load_shape_model(data_dir, settings["shape_model"], config.shape_components)
    if shape_model is not None:
        store_shape_model(store, shape_model, settings["shape_model"])
    logger.info(f"face shapes vary along {config.shape_components} components of {settings['shape_model']['faces']} "
                f"training faces ({', '.join(settings['shape_model']['data_sets'])})" if shape_model is not None else
                "face shapes as reconstructed: no shape variation asked for, or too few training faces in the data "
                "dir's datasets.zarr (`avatarflow train` builds it)")
    sources = FaceSources(data_dir=data_dir, backgrounds=tuple(settings["backgrounds"]), shape_model=shape_model)
    futures = [synthesize_shard.submit(shard, store.root.url, config, seed, sources) for shard in pending]
    images = 0
    for finished, future in enumerate(as_completed(futures), start=1):
        record = future.result()
        images += len(record["rows"])
        elapsed = time.perf_counter() - started
        logger.info(f"shards {finished}/{len(pending)}: {images} images in {elapsed:.0f}s "
                    f"({3600 * images / elapsed:.0f} images/hour)")
    return finish_data_set(store, config, started)


def finish_data_set(store: SyntheticStore, config: SynthesisConfig, started: float) -> dict:
    """Index every rendered sample, check the labels, and summarise them."""
    records = store.shard_records()
    rows = [row for record in records.values() for row in record["rows"]]
    failures = {name: error for record in records.values() for name, error in record["failures"].items()}
    where = {"dataset": store.root.url, "index": store.root.join("index.parquet").url,
             "labels": store.root.join("labels.zarr").url, "failed_identities": failures,
             "render_seconds": round(sum(sum(r["seconds"].values()) for r in records.values()), 1),
             "stage_seconds": {stage: round(sum(r["seconds"].get(stage, 0.0) for r in records.values()), 1)
                               for stage in ("reconstruct", "render", "labels")}}
    if not rows:
        return {**where, "images": 0, "identities": 0, "failed_checks": ["no image was rendered: no portrait held a usable face"],
                "wall_seconds": round(time.perf_counter() - started, 1)}
    import pandas as pd

    index = pd.DataFrame(rows).sort_values("sample").reset_index(drop=True)
    measurements = sample_measurements(store, index, config.resolution)
    failed_checks = validate_synthetic_labels(measurements, LabelRequirements(
        resolution=config.resolution, yaw=config.yaw, pitch=config.pitch, classes=SEGMENTATION_CLASSES))
    summary = {**where, **label_summary(index, measurements), "failed_checks": failed_checks,
               "wall_seconds": round(time.perf_counter() - started, 1)}
    store.write_index(rows, {"summary": summary, "segmentation_classes": list(SEGMENTATION_CLASSES)})
    return summary
