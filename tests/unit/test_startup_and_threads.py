"""Start-up and per-worker threads: the flow module loads without the heavy libraries (they load
on the workers that use them), and a started cluster's workers get their thread limits."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.profiles import THREAD_VARIABLES, THREADS_VARIABLE, start_local_cluster, thread_plan
from tests.conftest import REPO

HEAVY_MODULES = ("torch", "mediapipe", "matplotlib", "great_expectations", "mlflow", "bpy", "scipy")


def test_importing_the_flows_loads_no_heavy_library():
    """The `produce` command imports the flows before its first task can run; torch, MediaPipe,
    great-expectations, MLflow and scipy load later, where a task or a gate uses them."""
    probe = (f"import sys, flows.produce, flows.synthesize, avatarflow.cli; "
             f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"importing the flows loaded {loaded.stdout.strip()}"


@pytest.mark.parametrize(("workers", "cores", "expected"), [(2, 2, 1), (1, 2, 2), (2, 8, 4), (3, 8, 2), (4, 2, 1)])
def test_threads_split_the_cores_between_workers(monkeypatch, workers, cores, expected):
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    plan = thread_plan(workers, cores)
    assert plan.per_worker == expected
    assert plan.per_worker * workers <= max(cores, workers)  # never more threads than cores, unless workers are
    assert plan.environment() == {name: str(expected) for name in THREAD_VARIABLES}
    assert f"{expected} thread(s) per worker" in plan.describe() and "LP_NUM_THREADS" in plan.describe()


def test_threads_per_worker_can_be_set(monkeypatch):
    monkeypatch.setenv(THREADS_VARIABLE, "3")
    assert thread_plan(2, 2).per_worker == 3
    monkeypatch.setenv(THREADS_VARIABLE, "many")
    with pytest.raises(ValueError, match=f"{THREADS_VARIABLE} must be a whole number"):
        thread_plan(2, 2)


def _worker_view() -> dict:
    import os

    import torch

    return {"env": {name: os.environ.get(name) for name in THREAD_VARIABLES}, "torch_threads": torch.get_num_threads(),
            "preloaded": "flows.produce" in sys.modules}


def test_cluster_workers_get_their_thread_limits(monkeypatch):
    """A real two-worker cluster: each worker's libraries see the planned thread count, torch
    included, and each imported the flow modules as it started, before any task reached it."""
    from distributed import Client

    monkeypatch.setenv(THREADS_VARIABLE, "1")
    with start_local_cluster(n_workers=2) as cluster, Client(cluster) as client:
        views = client.run(_worker_view)
    assert len(views) == 2
    for view in views.values():
        assert view["env"] == {name: "1" for name in THREAD_VARIABLES}
        assert view["torch_threads"] == 1
        assert view["preloaded"]


def test_a_plain_http_api_gets_a_one_certificate_bundle(monkeypatch, tmp_path):
    """Prefect loads its CA bundle into every API client it makes, two per task run; an http:// API
    gets a one-certificate bundle instead, which still makes a working TLS context. An https:// API,
    a bundle the user chose, and TLS verification turned off are left alone."""
    import ssl

    from infra.prefect_server import skip_ca_bundle_on_plain_http

    for name in ("PREFECT_API_SSL_CERT_FILE", "PREFECT_API_TLS_INSECURE_SKIP_VERIFY"):
        monkeypatch.setenv(name, "")  # recorded, so the function's own setting is undone after the test
        monkeypatch.delenv(name)
    assert not skip_ca_bundle_on_plain_http("https://prefect.example/api", tmp_path)
    assert "PREFECT_API_SSL_CERT_FILE" not in os.environ

    assert skip_ca_bundle_on_plain_http("http://127.0.0.1:4200/api", tmp_path / "home")
    bundle = os.environ["PREFECT_API_SSL_CERT_FILE"]
    text = open(bundle, encoding="ascii").read()
    assert text.count("-----BEGIN CERTIFICATE-----") == 1 and text.count("-----END CERTIFICATE-----") == 1
    assert ssl.create_default_context(cafile=bundle).cert_store_stats()["x509_ca"] == 1

    monkeypatch.setenv("PREFECT_API_SSL_CERT_FILE", "/chosen/bundle.pem")
    assert not skip_ca_bundle_on_plain_http("http://127.0.0.1:4200/api", tmp_path)
    assert os.environ["PREFECT_API_SSL_CERT_FILE"] == "/chosen/bundle.pem"
    monkeypatch.delenv("PREFECT_API_SSL_CERT_FILE")
    monkeypatch.setenv("PREFECT_API_TLS_INSECURE_SKIP_VERIFY", "true")
    assert not skip_ca_bundle_on_plain_http("http://127.0.0.1:4200/api", tmp_path)
    assert "PREFECT_API_SSL_CERT_FILE" not in os.environ


def _worker_processes(cluster) -> list:
    return [worker.process.process for worker in cluster.workers.values()]


def test_a_closed_worker_skips_the_teardown_of_its_modules(monkeypatch, tmp_path):
    """A worker process that Dask closed ends with exit code 0 as soon as the exit hooks registered
    after the worker preload have run: a hook registered before it (the marker's) does not run. The
    same marker, without the worker preload, is written, so the marker works."""
    from distributed import Client

    from infra.profiles import WORKER_PRELOAD

    for preload, marked in ((("tests.unit.exit_marker", WORKER_PRELOAD), False), (("tests.unit.exit_marker",), True)):
        marker = tmp_path / f"marker-{len(preload)}"
        monkeypatch.setenv("AVATARFLOW_TEST_EXIT_MARKER", str(marker))
        cluster = start_local_cluster(n_workers=1, preload=preload)
        with cluster, Client(cluster) as client:
            assert client.submit(sum, [1, 2]).result() == 3
            processes = _worker_processes(cluster)
        assert [process.exitcode for process in processes] == [0]
        assert marker.exists() == marked, preload


FORKED_CLUSTER_PROBE = r'''
import json, os, sys

from distributed import Client

from infra.profiles import THREAD_VARIABLES, get_profile, start_local_cluster, start_worker_forkserver


def view():
    import psutil
    import torch

    return {"parent": " ".join(psutil.Process(os.getppid()).cmdline()),
            "env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
            "late": os.environ.get("AVATARFLOW_TEST_LATE"), "torch_threads": torch.get_num_threads(),
            "preloaded": "flows.produce" in sys.modules}


if __name__ == "__main__":
    profile = get_profile("local", None, 2)
    started = start_worker_forkserver(profile)
    parent_env = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ["AVATARFLOW_TEST_LATE"] = "set after the fork server started"
    with start_local_cluster(**profile.cluster_kwargs()) as cluster, Client(cluster) as client:
        views = list(client.run(view).values())
        total = client.submit(sum, [1, 2]).result()
        exits = [worker.process.process for worker in cluster.workers.values()]
    print(json.dumps({"started": started, "parent_env": parent_env, "views": views, "total": total,
                      "exit_codes": [process.exitcode for process in exits]}))
'''


def test_a_run_forks_its_workers_from_a_server_that_imported_the_flow_modules(monkeypatch):
    """start_worker_forkserver (the produce command calls it as its run starts): a real two-worker
    cluster whose workers are children of the fork server, with the flow modules loaded, their
    thread limits (torch's included), and a variable the run set after the server started; the
    command's own environment keeps no thread limit; tasks run and the workers exit cleanly."""
    import json

    from infra.profiles import SPAWN_WORKERS_VARIABLE

    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(THREADS_VARIABLE, "1")
    monkeypatch.delenv(SPAWN_WORKERS_VARIABLE, raising=False)
    done = subprocess.run([sys.executable, "-c", FORKED_CLUSTER_PROBE], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["started"] and report["total"] == 3
    assert report["parent_env"] == {name: None for name in THREAD_VARIABLES}
    assert len(report["views"]) == 2
    for view in report["views"]:
        assert "multiprocessing.forkserver" in view["parent"]
        assert view["env"] == {name: "1" for name in THREAD_VARIABLES}
        assert view["torch_threads"] == 1
        assert view["late"] == "set after the fork server started"
        assert view["preloaded"]
    assert report["exit_codes"] == [0, 0]


def test_no_fork_server_for_an_external_scheduler_or_when_turned_off(monkeypatch):
    from infra.profiles import SPAWN_WORKERS_VARIABLE, get_profile, start_worker_forkserver

    monkeypatch.delenv(SPAWN_WORKERS_VARIABLE, raising=False)
    assert not start_worker_forkserver(get_profile("cluster", "tcp://127.0.0.1:8786"))
    monkeypatch.setenv(SPAWN_WORKERS_VARIABLE, "true")
    assert not start_worker_forkserver(get_profile("local", None, 2))
