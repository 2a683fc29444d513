"""Blender jobs do not outlive what started them: a worker killed mid-render takes its Blender
process with it, and a job past its timeout is killed with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tasks.render.config import RenderConfig
from tasks.render.runner import BLENDER_JOB_SCRIPT, RenderError, run_blender_job, write_job
from tests.conftest import REPO
from tests.unit.test_render_runner import tiny_rig

WORKER = """
import sys
from tasks.render.runner import run_blender_job
print("started", flush=True)
run_blender_job(sys.argv[1], timeout_s=600)
"""


def long_job(folder: Path) -> Path:
    """A real job long enough (many 64² frames) to be caught mid-render."""
    return write_job(folder, **tiny_rig(n_frames=5000), settings=RenderConfig(), fps=25, resolution=64, seed=0)


def blender_children(parent: psutil.Process) -> list[psutil.Process]:
    return [child for child in parent.children(recursive=True)
            if any(str(BLENDER_JOB_SCRIPT) in part for part in child.cmdline())]


def is_gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_killed_worker_takes_its_blender_process_with_it(tmp_path):
    job_path = long_job(tmp_path)
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(job_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    blender: list[psutil.Process] = []
    try:
        assert worker.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while not blender and time.monotonic() < deadline:
            blender = blender_children(psutil.Process(worker.pid))
            time.sleep(0.1)
        assert len(blender) == 1, "the worker never started its Blender job"
        assert blender[0].ppid() == worker.pid and os.getpgid(blender[0].pid) == blender[0].pid  # its own group
        time.sleep(1.0)  # mid-render
        assert not is_gone(blender[0]) and not (tmp_path / "result.json").exists()
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


def test_a_job_past_its_timeout_is_killed_with_its_process_group(tmp_path):
    job_path = long_job(tmp_path)
    started = time.monotonic()
    with pytest.raises(RenderError, match=r"ran past its 3 s timeout and was killed"):
        run_blender_job(job_path, timeout_s=3)
    assert time.monotonic() - started < 60
    assert not (tmp_path / "result.json").exists()
    assert blender_children(psutil.Process()) == []  # nothing of the job is left
