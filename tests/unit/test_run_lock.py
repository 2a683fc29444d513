"""The run lock on a local data dir and on fsspec's in-memory filesystem, and the CLI's refusal
to start a run whose lock a live run holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from stores.location import DataLocation
from stores.run_lock import (RunLockedError, acquire_run_lock, check_run_lock, lock_location, release_run_lock,
                             stale_after_seconds)
from tests.conftest import REPO


@pytest.fixture(params=["local", "memory"])
def data_dir(request, tmp_path) -> str:
    return str(tmp_path / "data") if request.param == "local" else f"memory://lock-{uuid.uuid4().hex}"


def test_second_acquire_fails_until_the_first_is_released(data_dir):
    first = acquire_run_lock(data_dir, "run-a")
    with pytest.raises(RunLockedError, match=r"run 'run-a' is already being produced \(lock .*run-a\.lock"):
        acquire_run_lock(data_dir, "run-a")
    with pytest.raises(RunLockedError):
        check_run_lock(data_dir, "run-a")
    other = acquire_run_lock(data_dir, "run-b")  # another run name is independent
    assert release_run_lock(first)
    assert not DataLocation(first.url).exists()
    second = acquire_run_lock(data_dir, "run-a")
    assert second.token != first.token
    assert not release_run_lock(first)  # a released lock's token frees nothing any more
    assert DataLocation(second.url).exists()
    assert release_run_lock(second) and release_run_lock(other)


def test_a_stale_lock_is_taken_over(data_dir):
    old = acquire_run_lock(data_dir, "run-a")
    with pytest.raises(RunLockedError):
        acquire_run_lock(data_dir, "run-a", stale_after_s=3600)
    time.sleep(0.05)
    new = acquire_run_lock(data_dir, "run-a", stale_after_s=0.01)
    record = json.loads(DataLocation(new.url).read_text())
    assert record["token"] == new.token and record["run"] == "run-a"
    assert not release_run_lock(old)  # the old holder no longer owns it
    assert release_run_lock(new)


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    target = lock_location(tmp_path, "run-a")
    target.create_exclusive(json.dumps({"run": "run-a", "token": "t", "host": socket.gethostname(),
                                        "pid": dead_pid, "acquired_at": time.time()}).encode())
    lock = acquire_run_lock(tmp_path, "run-a", stale_after_s=3600)
    assert json.loads(target.read_text())["token"] == lock.token


def test_a_half_written_lock_counts_as_held(tmp_path):
    lock_location(tmp_path, "run-a").create_exclusive(b"")
    with pytest.raises(RunLockedError):
        acquire_run_lock(tmp_path, "run-a", stale_after_s=3600)


def test_stale_age_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AVATARFLOW_RUN_LOCK_STALE_SECONDS", "90")
    assert stale_after_seconds() == 90.0
    monkeypatch.setenv("AVATARFLOW_RUN_LOCK_STALE_SECONDS", "soon")
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        stale_after_seconds()


def test_cli_refuses_a_run_whose_lock_is_held(tmp_path):
    """A second `produce` of the same manifest ends with one error line before any server starts."""
    from tasks.batch.plan import run_name

    (tmp_path / "m.csv").write_text("id,portrait,text\na,a.png,Hi.\n")
    data_dir = tmp_path / "data"
    held = acquire_run_lock(data_dir, run_name(tmp_path / "m.csv", "photo"))  # held by this live process
    done = subprocess.run([sys.executable, "-m", "avatarflow.cli", "produce", str(tmp_path / "m.csv"),
                           "--data-dir", str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AVATARFLOW_HOME": str(tmp_path / "home")})
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: run 'm-") and "already being produced" in errors[0]
    assert not (data_dir / "prefect").exists()
    assert release_run_lock(held)
