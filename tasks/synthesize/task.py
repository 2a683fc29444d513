"""The synthesize task: render one shard and write its images, labels and completion record."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from stores.synthetic_store import SyntheticStore
from tasks.common.retries import RENDER_RETRIES, RETRY_DELAY_SECONDS, retry_unless_bad_input
from tasks.common.stage_task import current_worker
from tasks.synthesize.config import SynthesisConfig
from tasks.synthesize.plan import Shard
from tasks.synthesize.render import FaceSources, render_shard


@task(name="synthesize-shard", cache_policy=NO_CACHE, persist_result=False, retries=RENDER_RETRIES,
      retry_delay_seconds=RETRY_DELAY_SECONDS, retry_condition_fn=retry_unless_bad_input)
def synthesize_shard(shard: Shard, dataset_dir: str, config: SynthesisConfig, seed: int, sources: FaceSources) -> dict:
    """Returns the shard's record (small: rows, failures, timings); the arrays go to the store.
    A killed try leaves no record, so the shard is rendered again by the next try or a resumed run."""
    logger = get_run_logger()
    store = SyntheticStore(dataset_dir)
    work_dir = Path(tempfile.mkdtemp(prefix="avatarflow-synthesize-"))  # Blender's files stay on this machine
    try:
        result = render_shard(shard, work_dir, config, seed, sources)
        rows = result.rows
        if config.image_format == "zarr":
            images, rows = result.as_image_array(shard.start, shard.n_samples, config.resolution)
            store.put_image_rows(shard.start, images)
        else:
            store.put_images(result.images)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    record = {"shard": shard.index, "start": shard.start, "n_samples": shard.n_samples, "rows": rows,
              "failures": result.failures, "seconds": result.seconds, **current_worker()}
    store.write_shard(shard.index, shard.start, result.arrays, record)
    for identity, error in result.failures.items():
        logger.warning(f"shard {shard.index}: {identity} skipped: {error}")
    logger.info(f"shard {shard.index}: {len(result.rows)} images in {sum(result.seconds.values()):.1f}s")
    return record
