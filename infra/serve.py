"""`avatarflow serve`: everything a team needs to operate avatarflow on one machine, bound to
127.0.0.1 by default: the Prefect server, a Dask scheduler with its dashboard and local workers,
the MLflow UI on the data dir's tracking store, a process work pool with a worker, the
deployments of prefect.yaml and their failure automations. Ctrl-C stops what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from infra.prefect_server import QUIET_ENVIRONMENT, api_url, configured_api_url, is_healthy

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class ServeConfig:
    """What `serve` starts and where."""

    host: str = "127.0.0.1"
    """Interface every server binds to; only a deliberate profile opens another."""
    prefect_port: int = 4200
    """Prefect server (API and UI); unused when PREFECT_API_URL names a running server."""
    mlflow_port: int = 5000
    """MLflow UI over the data dir's tracking store."""
    scheduler_port: int = 8786
    """Dask scheduler."""
    dashboard_port: int = 8787
    """Dask dashboard."""
    cpu_workers: int = 2
    """Dask worker processes for the CPU stages (one thread each)."""
    gpu_devices: tuple[str, ...] = ()
    """CUDA devices; one Dask worker per device, pinned to it and advertising GPU=1."""
    work_pool: str = "avatarflow-local"
    """Process work pool the deployments of prefect.yaml name."""
    deployment_env: dict[str, str] = field(default_factory=dict)
    """Variables prefect.yaml's templates read (AVATARFLOW_DATA_DIR, the manifests, …)."""
    failure_threshold: int = 3
    """Avatar failures of one flow run, within `failure_window_s`, that pause the deployment's schedule."""
    failure_window_s: float = 600.0
    """Window of the failure automation, in seconds."""

    @property
    def scheduler_address(self) -> str:
        return f"tcp://{self.host}:{self.scheduler_port}"


class ServiceGroup:
    """Child processes started in their own process groups, each logging to a file, stopped
    together in reverse order."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}; see {self.log_dir / (name + '.log')}")

    def wait_for(self, name: str, url: str, timeout_s: float = 120.0) -> None:
        """Wait until `url` answers 200, failing early if the process died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not answer at {url} within {timeout_s:.0f} s; see {self.log_dir / (name + '.log')}")

    def stop(self, timeout_s: float = 20.0) -> None:
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def _run(command: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{what} failed: " + " | ".join(detail))
    return done.stdout


def apply_deployments(work_pool: str, prefect_env: dict[str, str]) -> list[str]:
    """Create the process work pool (once) and apply every deployment of prefect.yaml, whose
    templates read `prefect_env` and the environment; return the deployments' names."""
    import yaml

    inspected = subprocess.run([str(BIN / "prefect"), "work-pool", "inspect", work_pool], cwd=REPO,
                               env={**os.environ, **prefect_env}, capture_output=True, text=True, timeout=120)
    if inspected.returncode != 0:  # the pool does not exist yet
        _run([str(BIN / "prefect"), "work-pool", "create", work_pool, "--type", "process"], prefect_env,
             f"creating work pool {work_pool}")
    env = {"AVATARFLOW_REPO": str(REPO), **prefect_env}
    _run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(REPO / "prefect.yaml")],
         env, "prefect deploy --all")
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    # each entrypoint's function is a @flow named as the function (a unit test holds them to it)
    return [f"{d['entrypoint'].rpartition(':')[2]}/{d['name']}" for d in spec["deployments"]]


def serve(config: ServeConfig, data_dir: str, tracking_uri: str, home: Path) -> int:
    """Start everything, print the URLs, and block until Ctrl-C or SIGTERM; then stop it all."""
    from infra.automations import FailureAutomationConfig, apply_failure_automations

    services = ServiceGroup(home / "logs")
    stopping = False

    def request_stop(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    quiet = {**QUIET_ENVIRONMENT, "PYTHONPATH": str(REPO)}
    try:
        prefect_url = configured_api_url()
        if prefect_url and not is_healthy(prefect_url):
            raise RuntimeError(f"the Prefect server at PREFECT_API_URL={prefect_url} does not answer")
        if not prefect_url:
            prefect_url = api_url(config.host, config.prefect_port)
            if is_healthy(prefect_url):
                raise RuntimeError(f"a Prefect server already runs at {prefect_url}; set PREFECT_API_URL to use "
                                   "it, or choose another --prefect-port")
            print(f"serve: starting the Prefect server on {config.host}:{config.prefect_port} …", flush=True)
            # The UI calls the API at PREFECT_UI_API_URL, which otherwise names the default port.
            env = {**quiet, "PREFECT_HOME": str(home / "prefect"), "PREFECT_UI_API_URL": prefect_url}
            env.pop("PREFECT_API_URL", None)
            os.environ.pop("PREFECT_API_URL", None)
            services.start("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", config.host,
                                              "--port", str(config.prefect_port)], env)
            services.wait_for("prefect-server", f"{prefect_url}/health")
        prefect_env = {**quiet, "PREFECT_API_URL": prefect_url}
        os.environ.update(prefect_env)

        print("serve: starting the Dask scheduler and workers …", flush=True)
        services.start("dask-scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", config.host,
                                          "--port", str(config.scheduler_port),
                                          "--dashboard-address", f"{config.host}:{config.dashboard_port}"], quiet)
        dashboard = f"http://{config.host}:{config.dashboard_port}"
        services.wait_for("dask-scheduler", f"{dashboard}/health")
        worker = [sys.executable, "-m", "infra.dask_worker", config.scheduler_address, "--nthreads", "1",
                  "--host", config.host, "--no-dashboard"]
        if config.cpu_workers:
            services.start("dask-cpu-workers", [*worker, "--nworkers", str(config.cpu_workers), "--name", "cpu"],
                           {**quiet, "CUDA_VISIBLE_DEVICES": ""})
        for device in config.gpu_devices:
            services.start(f"dask-gpu-worker-{device}", [*worker, "--resources", "GPU=1", "--name", f"gpu-{device}"],
                           {**quiet, "CUDA_VISIBLE_DEVICES": device})

        print("serve: starting the MLflow UI …", flush=True)
        mlflow_url = f"http://{config.host}:{config.mlflow_port}"
        services.start("mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri", tracking_uri,
                                  "--host", config.host, "--port", str(config.mlflow_port), "--workers", "1"], quiet)

        print("serve: applying the deployments of prefect.yaml …", flush=True)
        deployments = apply_deployments(config.work_pool, {**prefect_env, **config.deployment_env})
        automations = apply_failure_automations(
            deployments, FailureAutomationConfig(config.failure_threshold, config.failure_window_s), api_url=prefect_url)
        # Flow runs the worker starts use the cluster above (the flows' default profile reads these).
        run_env = {**prefect_env, "AVATARFLOW_DASK_ADDRESS": config.scheduler_address,
                   "AVATARFLOW_GPU_TASKS": "1" if config.gpu_devices else "0", **config.deployment_env}
        services.start("prefect-worker", [str(BIN / "prefect"), "worker", "start", "--pool", config.work_pool,
                                          "--name", "avatarflow-serve"], run_env)
        services.wait_for("mlflow", f"{mlflow_url}/health")

        ui = prefect_url.removesuffix("/api")
        print(f"prefect UI:      {ui}")
        print(f"  deployments:   {ui}/deployments")
        for name in deployments:
            print(f"    {name}   (run: prefect deployment run '{name}')")
        print(f"  automations:   {len(automations)} (pause a deployment after {config.failure_threshold} "
              f"failed avatars of one run within {config.failure_window_s:.0f} s)")
        print(f"  work pool:     {config.work_pool} (one process worker)")
        print(f"dask scheduler:  {config.scheduler_address}   dashboard: {dashboard}/status")
        print(f"  workers:       {config.cpu_workers} CPU, {len(config.gpu_devices)} GPU")
        print(f"mlflow UI:       {mlflow_url}")
        print(f"data:            {data_dir}")
        print(f"logs:            {services.log_dir}")
        print("serve: ready; Ctrl-C stops everything serve started", flush=True)
        while not stopping:
            services.check_alive()
            time.sleep(0.5)
        return 0
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("serve: stopping …", flush=True)
        services.stop()
        print("serve: stopped", flush=True)
