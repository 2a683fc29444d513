"""Imported by each worker of a cluster that a run starts, as the worker starts (Dask's `preload`):
the modules every task of a flow needs to be unpickled and run load while the flow plans its run,
instead of after its first task has reached the worker. The flow modules import no heavy library
(tests/unit/test_startup_and_threads.py): a stage loads its own when it first runs."""

import prefect.task_engine  # noqa: F401  (runs each task)
import prefect_dask.client  # noqa: F401  (its submissions are unpickled from here)

import flows.produce  # noqa: F401  (the stage tasks, their configs and rows)
