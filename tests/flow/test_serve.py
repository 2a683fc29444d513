"""`avatarflow serve` for real: it brings up the Prefect server, a Dask scheduler and worker, the
MLflow UI, the work pool with a worker and the deployments; a deployment run triggered through the
API (as the UI's "Quick run" does) finishes; Ctrl-C stops everything it started."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.flow


def _read_until(process: subprocess.Popen, marker: str, timeout_s: float) -> str:
    """Collect the process's output until a line holds `marker` (or it exits, or time runs out).
    A thread reads, since a buffered pipe can hold lines that select() no longer reports."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if marker in line:
            break
    process.pending_output = lines  # the rest is read by the test that stops serve
    return "".join(seen)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from PIL import Image
    from skimage import data

    work = tmp_path_factory.mktemp("serve")
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    manifest = work / "nightly.csv"
    manifest.write_text("id,portrait,text,resolution\nnightly_astro,astronaut.png,Good evening.,128\n")
    ports = {name: free_port() for name in ("prefect", "mlflow", "scheduler", "dashboard")}
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(work / "prefect-client")
    process = subprocess.Popen(
        [sys.executable, "-m", "avatarflow.cli", "serve", "--data-dir", str(work / "data"), "--manifest", str(manifest),
         "--prefect-port", str(ports["prefect"]), "--mlflow-port", str(ports["mlflow"]),
         "--scheduler-port", str(ports["scheduler"]), "--dashboard-port", str(ports["dashboard"]),
         "--workers", "2", "--gpus", "", "--training-data", str(work)],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    startup = _read_until(process, "serve: ready", timeout_s=300)
    api = f"http://127.0.0.1:{ports['prefect']}/api"
    try:
        yield {"process": process, "startup": startup, "ports": ports, "api": api, "work": work, "env": env}
    finally:
        if process.poll() is None:  # a failed test left it running: stop it as a user would
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_serve_starts_everything_and_prints_the_urls(served):
    startup, ports = served["startup"], served["ports"]
    assert "serve: ready" in startup, startup[-3000:]
    assert f"http://127.0.0.1:{ports['prefect']}" in startup
    assert f"http://127.0.0.1:{ports['mlflow']}" in startup
    assert f"tcp://127.0.0.1:{ports['scheduler']}" in startup and f"http://127.0.0.1:{ports['dashboard']}/status" in startup
    assert "produce/nightly-production" in startup
    assert "synthesize/dataset-generation" in startup  # the synthetic data set deployment
    import json

    # The UI in a browser calls the API it is told here, so it must be this server, not port 4200.
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['prefect']}/ui-settings", timeout=10) as response:
        assert json.load(response)["api_url"] == served["api"]
    assert _answers(f"http://127.0.0.1:{ports['mlflow']}/health")
    assert _answers(f"http://127.0.0.1:{ports['dashboard']}/health")


def test_deployments_are_scheduled_with_a_failure_automation(served):
    from prefect.client.orchestration import PrefectClient

    async def read():
        async with PrefectClient(served["api"]) as client:
            nightly = await client.read_deployment_by_name("produce/nightly-production")
            automations = await client.read_automations()
            pools = await client.read_work_pools()
            return nightly, automations, pools

    nightly, automations, pools = asyncio.run(read())
    assert nightly.schedules and nightly.schedules[0].active
    assert nightly.work_pool_name == "avatarflow-local"
    assert "avatarflow-local" in {pool.name for pool in pools}
    assert any(str(nightly.id) in automation.model_dump_json() for automation in automations)


def test_deploy_applies_the_same_deployments_again_and_needs_a_server(served):
    env = {**served["env"], "PREFECT_API_URL": served["api"]}
    work = served["work"]
    again = subprocess.run([sys.executable, "-m", "avatarflow.cli", "deploy", "--data-dir", str(work / "data"),
                            "--manifest", str(work / "nightly.csv"), "--training-data", str(work)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "deployment produce/nightly-production on pool avatarflow-local" in again.stdout
    assert "3 failure automation(s)" in again.stdout
    nowhere = subprocess.run([sys.executable, "-m", "avatarflow.cli", "deploy"], cwd=REPO,
                             env={**served["env"], "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"},
                             capture_output=True, text=True, timeout=120)
    assert nowhere.returncode == 2 and "needs a running Prefect server" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr


def test_a_triggered_deployment_run_finishes_on_the_served_cluster(served):
    assert "serve: ready" in served["startup"]
    env = {**served["env"], "PREFECT_API_URL": served["api"]}
    run = subprocess.run([str(Path(sys.executable).with_name("prefect")), "deployment", "run",
                          "produce/nightly-production", "--watch", "--watch-timeout", "900"],
                         cwd=served["work"], env=env, capture_output=True, text=True, timeout=960)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Completed" in run.stdout
    videos = list((served["work"] / "data" / "outputs").glob("*/nightly_astro/talk.mp4"))
    assert videos and videos[0].stat().st_size > 0
    import zarr

    store = zarr.open_group(str(served["work"] / "data" / "avatars.zarr"), mode="r")
    run_name = videos[0].parents[1].name
    stages = dict(store[f"runs/{run_name}/nightly_astro"].attrs)["stages"]
    # The flow ran on serve's scheduler: every stage names one of its workers.
    assert all(info["worker"].startswith("tcp://127.0.0.1:") for info in stages.values())


def test_ctrl_c_stops_everything_serve_started(served):
    process, ports = served["process"], served["ports"]
    assert process.poll() is None, "serve exited early"
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=120)
    time.sleep(0.5)  # the reader thread drains the pipe
    rest = "".join(process.pending_output.get() for _ in range(process.pending_output.qsize()))
    assert process.returncode == 0, rest[-2000:]
    assert "serve: stopped" in rest
    for name, port in ports.items():
        assert not _port_open(port), f"{name} still listens on {port}"
