"""A Dask preload module: a worker started for `produce` imports the stage tasks every row runs
while the flow process is still starting, so the first task does not pay for them."""

from __future__ import annotations

import importlib

PRODUCE_MODULES = (
    "prefect.task_engine",
    "tasks.ingest.task",
    "tasks.reconstruct.task",
    "tasks.reconstruct.landmarks",
    "mediapipe.python.solutions.face_mesh",
    "tasks.animate.task",
    "tasks.render.task",
)


def dask_setup(worker) -> None:
    """Dask calls this as the worker starts."""
    for name in PRODUCE_MODULES:
        importlib.import_module(name)
