"""Scale-out for real: a `dask scheduler` and two `dask worker` processes on 127.0.0.1, one of them
advertising GPU=1, with a Prefect server the test starts. A 2-row manifest (a photo row and a
styled row, whose style stage is a GPU task) runs there through the `avatarflow` command, and
again on a LocalCluster: the GPU task runs only on the GPU worker, and every frame is the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from infra.prefect_server import ensure_server, stop_server
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.flow

MANIFEST = """id,portrait,style,text,resolution
plain,astronaut.png,,Hello from the cluster.,128
styled,astronaut.png,sketch,Drawn in pencil.,128
"""


def _start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_for_workers(address: str, count: int, timeout_s: float = 120.0) -> dict:
    from distributed import Client

    deadline = time.monotonic() + timeout_s
    with Client(address, timeout="60s") as client:
        while time.monotonic() < deadline:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            if len(workers) >= count:
                return workers
            time.sleep(0.5)
    raise AssertionError(f"only {len(workers)} of {count} dask workers joined")


def _produce(work: Path, data_dir: Path, api_url: str, *options: str, env_extra: dict | None = None):
    env = {**os.environ, "PREFECT_API_URL": api_url, **(env_extra or {})}
    done = subprocess.run([sys.executable, "-m", "avatarflow.cli", "produce", str(work / "manifest.csv"),
                           "--data-dir", str(data_dir), "--preset", "preview", *options],
                          cwd=work, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(next((data_dir / "outputs").glob("*/summary.json")).read_text()), done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from PIL import Image
    from skimage import data

    work = tmp_path_factory.mktemp("cluster")
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    (work / "manifest.csv").write_text(MANIFEST)
    prefect_home = work / "prefect"
    api_url = ensure_server(prefect_home, port=free_port())
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    worker = [sys.executable, "-m", "infra.dask_worker", address, "--nthreads", "1", "--host", "127.0.0.1",
              "--no-dashboard"]
    processes = [
        _start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                "--no-dashboard"], work / "scheduler.log"),
        _start([*worker, "--name", "cpu-worker"], work / "cpu-worker.log"),
        _start([*worker, "--name", "gpu-worker", "--resources", "GPU=1"], work / "gpu-worker.log"),
    ]
    try:
        workers = _wait_for_workers(address, 2)
        cluster, cluster_run = _produce(work, work / "cluster-data", api_url, "--dask-address", address,
                                        env_extra={"AVATARFLOW_GPU_TASKS": "1"})
        local, _ = _produce(work, work / "local-data", api_url, "--profile", "local")
        yield {"work": work, "workers": workers, "cluster": cluster, "local": local, "cluster_stdout": cluster_run.stdout}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        stop_server(prefect_home)


def _avatar(data_dir: Path, run: str, avatar: str) -> zarr.Group:
    return zarr.open_group(str(data_dir / "avatars.zarr"), mode="r")[f"runs/{run}/{avatar}"]


def test_both_rows_finish_on_the_external_cluster(runs):
    assert sorted(runs["cluster"]["finished"]) == ["plain", "styled"]
    assert sorted(runs["local"]["finished"]) == ["plain", "styled"]
    assert "dask: tcp://127.0.0.1:" in runs["cluster_stdout"]


def test_gpu_tasks_ran_only_on_the_gpu_worker(runs):
    names = {info["name"]: address for address, info in runs["workers"].items()}
    run = runs["cluster"]["run"]
    styled = dict(_avatar(runs["work"] / "cluster-data", run, "styled").attrs)["stages"]
    assert styled["style"]["worker_name"] == "gpu-worker"
    assert styled["style"]["worker"] == names["gpu-worker"]
    assert styled["style"]["worker_resources"] == {"GPU": 1.0}
    # The CPU stages are free to go anywhere; each still names the worker it ran on.
    for avatar in ("plain", "styled"):
        stages = dict(_avatar(runs["work"] / "cluster-data", run, avatar).attrs)["stages"]
        assert {info["worker"] for info in stages.values()} <= set(names.values())


def decode_video_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_frames_match_the_local_cluster_run(runs):
    for avatar in ("plain", "styled"):
        cluster_mp4 = Path(runs["cluster"]["output_folder"]) / avatar / "talk.mp4"
        local_mp4 = Path(runs["local"]["output_folder"]) / avatar / "talk.mp4"
        cluster_frames, local_frames = decode_video_frames(cluster_mp4), decode_video_frames(local_mp4)
        assert len(cluster_frames) > 10 and cluster_frames.std() > 5, avatar
        assert np.array_equal(cluster_frames, local_frames), avatar
