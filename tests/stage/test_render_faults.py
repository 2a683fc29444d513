"""Blender jobs do not outlive what started them: a worker killed mid-render, or while its
long-lived Blender process waits for the next job, takes that process with it, and a job past its
timeout is killed with its whole process group, in both the long-lived and the one-shot mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tasks.render.blender_worker import shared_worker
from tasks.render.config import RenderConfig
from tasks.render.runner import BLENDER_JOB_SCRIPT, RenderError, run_blender_job, write_job
from tests.conftest import REPO
from tests.unit.test_render_runner import tiny_rig

# the worker holds the shared Blender process; "idle" runs a short job first, then waits
WORKER = """
import sys, time
from tasks.render.runner import run_blender_job
print("started", flush=True)
run_blender_job(sys.argv[1], timeout_s=600)
print("idle", flush=True)
time.sleep(600)
"""


def long_job(folder: Path) -> Path:
    """A real job long enough (many 64² frames) to be caught mid-render."""
    return write_job(folder, **tiny_rig(n_frames=5000), settings=RenderConfig(), fps=25, resolution=64, seed=0)


def short_job(folder: Path) -> Path:
    return write_job(folder, **tiny_rig(n_frames=2), settings=RenderConfig(), fps=25, resolution=16, seed=0)


def blender_children(parent: psutil.Process) -> list[psutil.Process]:
    return [child for child in parent.children(recursive=True)
            if any(str(BLENDER_JOB_SCRIPT) in part for part in child.cmdline())]


def is_gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("when", ["mid-render", "between jobs"])
def test_a_killed_worker_takes_its_blender_process_with_it(tmp_path, when):
    job_path = long_job(tmp_path) if when == "mid-render" else short_job(tmp_path)
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(job_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "AVATARFLOW_JOBS_PER_BLENDER": "50"})
    blender: list[psutil.Process] = []
    try:
        assert worker.stdout.readline().strip() == "started"
        if when == "between jobs":
            assert worker.stdout.readline().strip() == "idle"
            assert (tmp_path / "result.json").is_file()
        deadline = time.monotonic() + 60
        while not blender and time.monotonic() < deadline:
            blender = blender_children(psutil.Process(worker.pid))
            time.sleep(0.1)
        assert len(blender) == 1, "the worker has no Blender process"
        assert "--serve" in blender[0].cmdline()  # the long-lived kind
        assert blender[0].ppid() == worker.pid and os.getpgid(blender[0].pid) == blender[0].pid  # its own group
        time.sleep(1.0)  # mid-render, or idle a while
        assert not is_gone(blender[0])
        if when == "mid-render":
            assert not (tmp_path / "result.json").exists()
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 5
        while not is_gone(blender[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert is_gone(blender[0]), "Blender kept running after its worker was killed"
    finally:
        worker.kill()
        for process in blender:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.mark.parametrize("jobs_per_blender", [1, 50], ids=["one-shot", "long-lived"])
def test_a_job_past_its_timeout_is_killed_with_its_process_group(tmp_path, jobs_per_blender):
    shared_worker().close()  # no Blender left over from an earlier test
    job_path = long_job(tmp_path)
    started = time.monotonic()
    with pytest.raises(RenderError, match=r"ran past its 3 s timeout and was killed"):
        run_blender_job(job_path, timeout_s=3, jobs_per_blender=jobs_per_blender)
    assert time.monotonic() - started < 60
    assert not (tmp_path / "result.json").exists()
    # nothing of the job is left; a long-lived process is dropped, the next job starts a fresh one
    assert [child for child in blender_children(psutil.Process()) if not is_gone(child)] == []
    assert shared_worker().pid is None
