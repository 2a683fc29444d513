"""What every stage task does around its compute: time it, record status in the store, log a
progress line, and turn an expected input error into a Failed state with a one-line message
(no traceback for bad input; real bugs still raise)."""

from __future__ import annotations

import logging
import time
from typing import Callable

from prefect import get_run_logger
from prefect.states import Failed, State

from stores.avatar_store import ArrayRef, AvatarStore, StageRef
from tasks.common.errors import AvatarInputError


class _NoEmptyTraceback(logging.Filter):
    """Prefect logs a task that returns a Failed state with exc_info=True, outside any exception, so
    each failed row printed a stray `NoneType: None`; such a record keeps its message, without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


if not any(isinstance(f, _NoEmptyTraceback) for f in logging.getLogger("prefect.task_runs").filters):
    logging.getLogger("prefect.task_runs").addFilter(_NoEmptyTraceback())

StageCompute = Callable[[AvatarStore], tuple[dict[str, ArrayRef], dict]]
StageFinish = Callable[[AvatarStore, dict], None]


def current_worker() -> dict:
    """Which Dask worker runs this stage (address, name, advertised resources), for the stage record."""
    import socket

    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker (a thread-pool run)
        return {"worker": f"{socket.gethostname()}/local", "worker_resources": {}}
    return {"worker": worker.address, "worker_name": str(worker.name),
            "worker_resources": dict(worker.state.total_resources)}


def run_stage(
    stage: str, store_url: str, run: str, avatar: str, compute: StageCompute, finish: StageFinish | None = None
) -> StageRef | State:
    """Run one stage for one avatar; `compute` reads and writes the store and returns (arrays, info).
    `finish(store, info)` runs after the stage's own record is written (the last stage marks the
    avatar complete there)."""
    logger = get_run_logger()
    store = AvatarStore(store_url)
    logger.info(f"{avatar}: {stage} started")
    where = current_worker()
    started = time.perf_counter()
    try:
        arrays, info = compute(store)
    except AvatarInputError as error:
        seconds = time.perf_counter() - started
        extra = error.record
        # Only this stage's own record: parallel stages of one avatar never write the same
        # metadata document. publish_run writes the avatar-level error.
        store.record_stage(run, avatar, stage, "failed", seconds, error=str(error), **where, **extra)
        logger.warning(f"{avatar}: {stage} failed: {error}")
        return Failed(message=f"{stage}: {error}")
    seconds = time.perf_counter() - started
    # "warnings" and "record" (e.g. model versions, seeds drawn) go into the stage's record.
    store.record_stage(run, avatar, stage, "ok", seconds, **where, **{k: v for k, v in info.items() if k == "warnings"},
                       **info.get("record", {}))
    if finish is not None:
        finish(store, info)
    logger.info(f"{avatar}: {stage} done in {seconds:.2f}s")
    return StageRef(store_url=store_url, run=run, avatar=avatar, stage=stage, seconds=seconds, arrays=arrays, info=info)
