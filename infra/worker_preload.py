"""Imported by each worker of a cluster that a run starts, and by `python -m infra.dask_worker`, as
the worker starts (Dask's `preload`):
- the modules every task of a flow needs to be unpickled and run load while the flow plans its
  run, instead of after its first task has reached the worker. The flow modules import no heavy
  library (tests/unit/test_startup_and_threads.py): a stage loads its own when it first runs;
- a worker process that Dask has closed skips the interpreter's teardown of its modules. Once a
  worker has imported torch, MediaPipe, OpenCV and Prefect, that teardown holds the end of every
  run about a second (closing two such workers: 1.2 s, against 0.04 s without it). It runs last of
  the exit hooks that came after this module (Prefect drains its event and log workers before any
  of them), and only for a worker whose status is `closed`: a worker that failed keeps the
  interpreter's own exit and its exit code. (A worker forked from a run's fork server, see
  `infra.profiles.start_worker_forkserver`, ends without that teardown anyway: a fork server's
  children leave with `os._exit`, after Prefect's thread exit hooks have drained its events and logs.)"""

import atexit
import logging
import os
import sys

_STARTED_WORKER: list = []


def dask_setup(worker) -> None:
    """Dask calls this once the worker has started."""
    _STARTED_WORKER.append(worker)


def _exit_closed_worker() -> None:
    from distributed.core import Status

    if _STARTED_WORKER and _STARTED_WORKER[0].status == Status.closed:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


atexit.register(_exit_closed_worker)  # before the imports below, so that their exit hooks run first

import prefect.task_engine  # noqa: E402,F401  (runs each task)
import prefect_dask.client  # noqa: E402,F401  (its submissions are unpickled from here)

import flows.produce  # noqa: E402,F401  (the stage tasks, their configs and rows)
# The stages import scipy where they use it, so the produce command, which runs none, skips it; a worker
# (or the fork server its workers come from) loads it here, once.
import scipy.ndimage  # noqa: E402,F401
import scipy.sparse.linalg  # noqa: E402,F401
