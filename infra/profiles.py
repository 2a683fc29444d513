"""Execution profiles: where tasks run (a LocalCluster, local GPU workers, or an existing Dask
scheduler) and with which resources. Flows resolve their profile when a run starts, so a
deployment or a flow parameter can choose it; nothing here is fixed at import time."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Callable

PROFILE_NAMES = ("local", "gpu", "cluster")
GPU_RESOURCE = "GPU"
SCHEDULER_CONFIG = {"distributed.scheduler.worker-saturation": "inf"}
"""Every ready task goes to a worker at once, so each worker runs its ready tasks by priority
(exports last); with queuing, root tasks wait in the scheduler behind exports a worker holds."""
CLIENT_CONFIG = {"distributed.admin.low-level-log-length": 16}
"""A Dask client keeps its last N sent message batches for debugging. Each batch holds whole task
submissions (a Prefect task, its parameters and serialised run context), so distributed's default
of 1,000 grew the flow process by about 150 KB per row until that many batches were held."""
THREADS_VARIABLE = "AVATARFLOW_THREADS_PER_WORKER"
"""Environment variable: threads each worker's libraries may use (default: cores // workers)."""
THREAD_VARIABLES = {
    "LP_NUM_THREADS": "Mesa llvmpipe (Blender's Workbench rasteriser)",
    "OMP_NUM_THREADS": "torch and OpenMP",
    "OPENBLAS_NUM_THREADS": "OpenBLAS",
    "MKL_NUM_THREADS": "MKL",
}
"""Per-worker thread limits set in each started worker's environment, read when a library loads."""


@dataclass(frozen=True)
class ExecutionProfile:
    """How the Dask side of a flow run is set up."""

    name: str
    """Profile name: a flow's `profile` parameter, --profile, or AVATARFLOW_PROFILE."""
    dask_address: str | None = None
    """Address of an existing `dask scheduler`; None starts a cluster for the run."""
    n_workers: int = 2
    """CPU worker processes of a started cluster (one thread each: Blender and MediaPipe are bound to their thread)."""
    gpu_devices: tuple[str, ...] = ()
    """CUDA devices of a started cluster: one worker per device, pinned by CUDA_VISIBLE_DEVICES, advertising GPU=1."""
    gpu_tasks: bool = False
    """Annotate GPU tasks with resources={"GPU": 1}; only where some worker advertises a GPU, since
    a task asking for a resource no worker has waits forever."""
    memory_limit: str = "auto"
    """Memory limit of each started worker."""
    dashboard: bool = False
    """Serve the Dask dashboard of a started cluster (on a free 127.0.0.1 port; its link is logged);
    AVATARFLOW_DASK_DASHBOARD=1 turns it on."""

    def cluster_kwargs(self) -> dict:
        """Keyword arguments of `start_local_cluster` for this profile."""
        return {"n_workers": self.n_workers, "gpu_devices": list(self.gpu_devices), "memory_limit": self.memory_limit,
                "dashboard": self.dashboard}

    def threads(self) -> ThreadPlan | None:
        """The thread plan of a started cluster's workers (None for an external scheduler, whose
        workers are started, and sized, elsewhere)."""
        if self.dask_address:
            return None
        return thread_plan(self.n_workers + len(self.gpu_devices))


@dataclass(frozen=True)
class ThreadPlan:
    """How many threads each worker's libraries use, so that workers together fill the cores
    without oversubscribing them (two llvmpipe renders with a thread per core each ran slower
    than two with one thread each on two cores)."""

    cores: int
    workers: int
    per_worker: int

    def environment(self) -> dict[str, str]:
        return {name: str(self.per_worker) for name in THREAD_VARIABLES}

    def describe(self) -> str:
        names = ", ".join(f"{name} ({what})" for name, what in THREAD_VARIABLES.items())
        return (f"threads: {self.workers} worker(s) on {self.cores} core(s): {self.per_worker} thread(s) "
                f"per worker for {names}")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_plan(n_workers: int, cores: int | None = None) -> ThreadPlan:
    """cores // workers threads per worker (at least 1), or AVATARFLOW_THREADS_PER_WORKER."""
    cores = cores or available_cores()
    n_workers = max(1, n_workers)
    text = os.environ.get(THREADS_VARIABLE, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{THREADS_VARIABLE} must be a whole number >= 1, got {text!r}")
        return ThreadPlan(cores, n_workers, int(text))
    return ThreadPlan(cores, n_workers, max(1, cores // n_workers))


def visible_gpu_devices() -> tuple[str, ...]:
    """CUDA device ids this machine shows: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1")
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return ()
    return tuple(line.strip() for line in listing.splitlines() if line.strip())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def get_profile(name: str | None = None, dask_address: str | None = None, workers: int | None = None) -> ExecutionProfile:
    """Resolve a profile when a run starts. `name` defaults to AVATARFLOW_PROFILE, else "cluster"
    when an address is known (argument or AVATARFLOW_DASK_ADDRESS), else "gpu" where a GPU is
    visible, else "local". Empty strings count as unset (deployment templates give them)."""
    env_address = os.environ.get("AVATARFLOW_DASK_ADDRESS") or None
    name = name or os.environ.get("AVATARFLOW_PROFILE") or None
    if name is None:
        name = "cluster" if (dask_address or env_address) else ("gpu" if visible_gpu_devices() else "local")
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    if dask_address or name == "cluster":
        dask_address = dask_address or env_address
        if not dask_address:
            raise ValueError("the cluster profile needs a scheduler address: --dask-address, the flow's "
                             "dask_address parameter, or AVATARFLOW_DASK_ADDRESS")
        # An external scheduler's workers say for themselves whether they have GPUs (--resources GPU=N).
        return ExecutionProfile(name="cluster", dask_address=dask_address, gpu_tasks=_env_flag("AVATARFLOW_GPU_TASKS"))
    profile = ExecutionProfile(name=name, dashboard=_env_flag("AVATARFLOW_DASK_DASHBOARD"))
    if name == "gpu":
        devices = visible_gpu_devices()
        if not devices:
            raise ValueError("the gpu profile found no GPU (nvidia-smi / CUDA_VISIBLE_DEVICES); use --profile local")
        profile = replace(profile, gpu_devices=devices, gpu_tasks=True)
    if workers:
        profile = replace(profile, n_workers=workers)
    return profile


def gpu_slot(enabled: bool):
    """Dask resource annotation for a task that uses a GPU; only where workers advertise GPUs."""
    import dask

    return dask.annotate(resources={GPU_RESOURCE: 1}) if enabled else contextlib.nullcontext()


WORKER_PRELOAD = "infra.worker_preload"
"""Module each worker of a started cluster imports as it starts."""


def start_local_cluster(n_workers: int = 2, gpu_devices: list[str] | tuple[str, ...] = (), memory_limit: str = "auto",
                        dashboard: bool = False, preload: tuple[str, ...] = (WORKER_PRELOAD,)):
    """A cluster on this machine, bound to 127.0.0.1: `n_workers` CPU workers, plus one worker per
    GPU device, pinned to it by CUDA_VISIBLE_DEVICES and advertising GPU=1. CPU workers see no
    GPU, so torch on them stays on the CPU. Each worker's thread limits follow `thread_plan`.
    Without `dashboard` the scheduler serves only its health check and advertises no dashboard link.
    Each worker imports the `preload` modules as it starts (infra/worker_preload.py)."""
    from distributed import Nanny, Scheduler, SpecCluster

    keep_glibc_malloc_defaults()
    # What a forked worker missed and a spawned one inherits (none without a fork server), then the thread limits.
    environment = {**_changed_since_forkserver(), **thread_plan(n_workers + len(gpu_devices)).environment()}
    common = {"nthreads": 1, "host": "127.0.0.1", "memory_limit": memory_limit, "preload": list(preload)}
    workers = {f"cpu-{i}": {"cls": Nanny, "options": {**common, "env": {**environment, "CUDA_VISIBLE_DEVICES": ""}}}
               for i in range(n_workers)}
    for device in gpu_devices:
        gpu_environment = {**environment, "CUDA_VISIBLE_DEVICES": str(device)}
        workers[f"gpu-{device}"] = {"cls": Nanny, "options": {**common, "resources": {GPU_RESOURCE: 1},
                                                              "env": gpu_environment}}
    options = {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0", "dashboard": dashboard}
    scheduler = {"cls": Scheduler if dashboard else _scheduler_without_dashboard, "options": options}
    import dask

    config = dict(SCHEDULER_CONFIG)
    if _WORKER_FORKSERVER:  # start_worker_forkserver ran: the workers fork from its server
        config["distributed.worker.multiprocessing-method"] = "forkserver"
    with dask.config.set(config):  # read while SpecCluster starts the scheduler and the workers
        return SpecCluster(scheduler=scheduler, workers=workers, name="avatarflow")


SPAWN_WORKERS_VARIABLE = "AVATARFLOW_SPAWN_WORKERS"
"""Environment variable: true starts each local worker as a fresh interpreter instead of forking it."""
_WORKER_FORKSERVER: list[dict[str, str]] = []
"""The environment the workers' fork server started with, once start_worker_forkserver ran."""


def start_worker_forkserver(profile: ExecutionProfile) -> bool:
    """Start the fork server that this process's next local cluster forks its workers from, and have
    it import the worker preload now. A spawned worker imports the flow modules itself (2.5 s of one
    core each, after the cluster starts); forked from this server, it starts with them loaded, and
    the server's import runs beside the command's own. The server gets the workers' pre-spawn and
    thread-limit environment, which libraries read as they load; this process's environment is
    left as it was; variables this process sets later reach the workers through their nanny's
    environment, as they would reach a spawned worker. Start it once the run's environment is
    settled (the Prefect API's address, above all): modules read some of it as they load. False
    (nothing started) for an external scheduler, where fork servers do not exist, or with
    AVATARFLOW_SPAWN_WORKERS=true (each worker a fresh interpreter, as before). The server lives
    as long as this process: Dask learns of a forked worker's exit from it."""
    import multiprocessing
    from multiprocessing import forkserver

    if (profile.dask_address is not None or _env_flag(SPAWN_WORKERS_VARIABLE)
            or "forkserver" not in multiprocessing.get_all_start_methods()):
        return False
    if _WORKER_FORKSERVER:
        return True
    import dask
    from distributed.utils import get_mp_context

    keep_glibc_malloc_defaults()
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        context = get_mp_context()  # sets distributed's own preload list once; ours replaces it below
    environment = {name: str(value) for name, value in
                   dask.config.get("distributed.nanny.pre-spawn-environ", default={}).items()}
    environment.setdefault("PYTHONHASHSEED", "6640")  # as Nanny sets it: one hash seed for every worker
    environment.update(profile.threads().environment())
    context.set_forkserver_preload(["distributed", WORKER_PRELOAD])
    with _environment(environment):
        forkserver.ensure_running()
        _WORKER_FORKSERVER.append(dict(os.environ))
    return True


def _changed_since_forkserver() -> dict[str, str]:
    """Variables set or changed in this process since the workers' fork server started (none when
    there is none)."""
    if not _WORKER_FORKSERVER:
        return {}
    started_with = _WORKER_FORKSERVER[0]
    return {name: value for name, value in os.environ.items() if started_with.get(name) != value}


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """os.environ with `values` set, for a child started inside; then as it was."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _scheduler_without_dashboard(**options):
    """A Scheduler whose HTTP server answers only /health: distributed always starts one, with the
    dashboard's info pages, and names it the "dashboard" service, which clients then log as a link."""
    import dask
    from distributed import Scheduler

    with dask.config.set({"distributed.scheduler.http.routes": ["distributed.http.health"]}):
        scheduler = Scheduler(**options)
    scheduler.services.pop("dashboard", None)
    return scheduler


def make_task_runner(profile: ExecutionProfile):
    """The DaskTaskRunner of a profile: the external scheduler's address, or a cluster started for the run."""
    import dask
    from prefect_dask import DaskTaskRunner

    dask.config.set(CLIENT_CONFIG)  # read when the task runner's client starts, in this process
    if profile.dask_address:
        return DaskTaskRunner(address=profile.dask_address)
    return DaskTaskRunner(cluster_class=start_local_cluster, cluster_kwargs=profile.cluster_kwargs())


def start_workers_early(task_runner) -> Future:
    """Start a flow's Dask cluster, or connect to its scheduler, in a thread, so the workers come up
    while the flow plans its run. Wait for the Future before the first submit: the task runner
    creates its client once, on first use, and two threads must not both create it."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dask-start")
    started = pool.submit(lambda: task_runner.client)
    pool.shutdown(wait=False)  # its one thread ends with the job
    return started


def worker_threads(client, max_age_s: float = 1.0) -> Callable[[], int]:
    """The worker threads of a Dask client's cluster, as a callable that asks the scheduler at most
    once every `max_age_s` (workers may join or leave during a run)."""
    asked = {"at": -math.inf, "threads": 0}

    def threads() -> int:
        if time.monotonic() - asked["at"] >= max_age_s:
            asked["threads"] = sum(client.nthreads().values())
            asked["at"] = time.monotonic()
        return asked["threads"]

    return threads


def keep_glibc_malloc_defaults() -> None:
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in every worker it spawns. Any value of it turns off
    glibc's dynamic mmap threshold, so every large tensor is mmapped and page-faulted anew, and
    torch training runs at less than half speed (measured: 28 against 71 images/s). Workers
    spawned from here keep glibc's defaults; the other pre-spawn settings stay."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}))
    if environ.pop("MALLOC_TRIM_THRESHOLD_", None) is not None:
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
