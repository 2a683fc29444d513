"""Execution profiles: where tasks run (a LocalCluster or an existing Dask scheduler) and with
which resources. Flows pick a profile by name; the CLI's --dask-address overrides the address."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ExecutionProfile:
    """How the Dask side of a flow run is set up."""

    name: str
    """Profile name, as given to --profile or AVATARFLOW_PROFILE."""
    dask_address: str | None = None
    """Address of an existing `dask scheduler`; None starts a LocalCluster."""
    n_workers: int = 2
    """LocalCluster worker processes (one thread each, since Blender and MediaPipe are bound to their thread)."""
    gpus_per_worker: int = 0
    """GPU slots each LocalCluster worker advertises as the Dask resource "GPU"."""
    gpu_tasks: bool = False
    """Annotate GPU-capable tasks with resources={"GPU": 1}; only set where workers advertise GPUs."""
    memory_limit: str = "auto"
    """Dask worker memory limit."""

    def cluster_kwargs(self) -> dict:
        kwargs = {
            "n_workers": self.n_workers,
            "threads_per_worker": 1,
            "processes": True,
            "memory_limit": self.memory_limit,
            "dashboard_address": None,
            "host": "127.0.0.1",
        }
        if self.gpus_per_worker:
            kwargs["resources"] = {"GPU": self.gpus_per_worker}
        return kwargs


def _local_gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    return 1


PROFILES: dict[str, ExecutionProfile] = {
    "local": ExecutionProfile(name="local"),
    "gpu": ExecutionProfile(name="gpu", n_workers=2, gpus_per_worker=1, gpu_tasks=True),
    # A task asking for a resource no worker has waits forever, so GPU annotations on an external
    # cluster are opt-in: start its workers with --resources GPU=N and set AVATARFLOW_GPU_TASKS=1.
    "cluster": ExecutionProfile(
        name="cluster",
        dask_address=os.environ.get("AVATARFLOW_DASK_ADDRESS"),
        gpu_tasks=os.environ.get("AVATARFLOW_GPU_TASKS") == "1",
    ),
}


def get_profile(name: str | None = None, dask_address: str | None = None, workers: int | None = None) -> ExecutionProfile:
    """Resolve a profile by name (default: AVATARFLOW_PROFILE, else "gpu" where a GPU is present, else "local")."""
    name = name or os.environ.get("AVATARFLOW_PROFILE") or ("gpu" if _local_gpu_count() else "local")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if dask_address:
        # An external scheduler's workers say for themselves whether they have GPUs (--resources GPU=N).
        profile = replace(profile, dask_address=dask_address, gpu_tasks=os.environ.get("AVATARFLOW_GPU_TASKS") == "1")
    if profile.name == "cluster" and not profile.dask_address:
        raise ValueError("the cluster profile needs --dask-address or AVATARFLOW_DASK_ADDRESS")
    if workers:
        profile = replace(profile, n_workers=workers)
    return profile


def gpu_slot(enabled: bool):
    """Dask resource annotation for GPU-capable tasks; only where workers advertise GPUs."""
    import contextlib

    import dask

    return dask.annotate(resources={"GPU": 1}) if enabled else contextlib.nullcontext()


def make_task_runner(profile: ExecutionProfile):
    """A DaskTaskRunner for the profile."""
    from prefect_dask import DaskTaskRunner

    if profile.dask_address:
        return DaskTaskRunner(address=profile.dask_address)
    keep_glibc_malloc_defaults()
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=profile.cluster_kwargs())


def keep_glibc_malloc_defaults() -> None:
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in every worker it spawns. Any value of it turns off
    glibc's dynamic mmap threshold, so every large tensor is mmapped and page-faulted anew, and
    torch training runs at less than half speed (measured: 28 against 71 images/s). Workers
    spawned from here keep glibc's defaults; the other pre-spawn settings stay."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}))
    if environ.pop("MALLOC_TRIM_THRESHOLD_", None) is not None:
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
