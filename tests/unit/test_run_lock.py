"""The run lock (a lease with a heartbeat and an expiry) on a local data dir and on fsspec's
in-memory filesystem, and the CLI's refusal to start a run whose lock a live run holds."""

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
from stores.run_lock import (RunLockedError, acquire_run_lock, check_run_lock, expiry_seconds, heartbeat_seconds,
                             hold_run_lock, lock_location, release_run_lock, stale_after_seconds)
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


def test_lease_times_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("AVATARFLOW_RUN_LOCK_EXPIRY_SECONDS", raising=False)
    monkeypatch.delenv("AVATARFLOW_RUN_LOCK_HEARTBEAT_SECONDS", raising=False)
    monkeypatch.delenv("AVATARFLOW_RUN_LOCK_STALE_SECONDS", raising=False)
    assert (heartbeat_seconds(), expiry_seconds()) == (10.0, 60.0)
    monkeypatch.setenv("AVATARFLOW_RUN_LOCK_STALE_SECONDS", "90")  # the older name still counts
    assert stale_after_seconds() == expiry_seconds() == 90.0
    monkeypatch.setenv("AVATARFLOW_RUN_LOCK_EXPIRY_SECONDS", "30")
    monkeypatch.setenv("AVATARFLOW_RUN_LOCK_HEARTBEAT_SECONDS", "2")
    assert (heartbeat_seconds(), expiry_seconds()) == (2.0, 30.0)
    monkeypatch.setenv("AVATARFLOW_RUN_LOCK_EXPIRY_SECONDS", "soon")
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        expiry_seconds()


def test_a_heartbeat_keeps_a_lease_alive_past_its_expiry(data_dir):
    with hold_run_lock(data_dir, "run-a", heartbeat_s=0.1, expiry_s=0.6) as lock:
        first = json.loads(DataLocation(lock.url).read_text())["renewed_at"]
        time.sleep(1.5)  # more than twice the expiry
        with pytest.raises(RunLockedError, match=r"already being produced .* last heartbeat 0 s ago"):
            acquire_run_lock(data_dir, "run-a", expiry_s=0.6)
        with pytest.raises(RunLockedError):
            check_run_lock(data_dir, "run-a", expiry_s=0.6)
        assert json.loads(DataLocation(lock.url).read_text())["renewed_at"] > first
        assert not lock.lost.is_set()
    assert not DataLocation(lock.url).exists()  # released on the way out


def test_a_lease_without_heartbeat_expires_and_is_taken_over(data_dir):
    old = acquire_run_lock(data_dir, "run-a")  # nothing renews it
    with pytest.raises(RunLockedError):
        check_run_lock(data_dir, "run-a", expiry_s=0.5)
    time.sleep(0.7)
    check_run_lock(data_dir, "run-a", expiry_s=0.5)  # the pre-check agrees that it has expired
    with hold_run_lock(data_dir, "run-a", heartbeat_s=0.1, expiry_s=0.5) as new:
        assert json.loads(DataLocation(new.url).read_text())["token"] == new.token
        assert not release_run_lock(old)  # the old holder no longer owns it
    assert not DataLocation(new.url).exists()


def test_a_holder_whose_lease_was_taken_over_notices(data_dir):
    with hold_run_lock(data_dir, "run-a", heartbeat_s=0.2, expiry_s=5) as lock:
        lock_location(data_dir, "run-a").remove()
        thief = acquire_run_lock(data_dir, "run-a")
        assert lock.lost.wait(3)
    assert json.loads(lock_location(data_dir, "run-a").read_text())["token"] == thief.token  # not released by the loser
    assert release_run_lock(thief)


def test_the_lease_is_released_on_an_exception(data_dir):
    with pytest.raises(KeyboardInterrupt):
        with hold_run_lock(data_dir, "run-a", heartbeat_s=1, expiry_s=5):
            raise KeyboardInterrupt
    assert not lock_location(data_dir, "run-a").exists()
    with pytest.raises(ValueError, match="shorter than its expiry"):
        with hold_run_lock(data_dir, "run-a", heartbeat_s=5, expiry_s=5):
            pass


def test_a_killed_holder_on_another_host_is_taken_over_after_the_expiry(tmp_path):
    """A process holding the lease is SIGKILLed; its lease, written as if from another host (so that
    the dead-pid shortcut does not apply), blocks until it expires, then is taken over."""
    script = (
        "import sys, time, socket\n"
        "socket.gethostname = lambda: 'elsewhere'\n"
        "from stores.run_lock import hold_run_lock\n"
        "with hold_run_lock(sys.argv[1], 'run-a', heartbeat_s=0.2, expiry_s=2):\n"
        "    print('held', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(2.5)  # past the expiry, but it is renewed
        with pytest.raises(RunLockedError, match="held by elsewhere pid"):
            acquire_run_lock(tmp_path, "run-a", expiry_s=2)
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(RunLockedError):  # just killed: its last heartbeat is recent
        acquire_run_lock(tmp_path, "run-a", expiry_s=2)
    time.sleep(2.5)
    lock = acquire_run_lock(tmp_path, "run-a", expiry_s=2)
    assert release_run_lock(lock)


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
