"""Faults, through the `avatarflow produce` command on one fresh data dir (a real Prefect server,
LocalCluster, Zarr store, MLflow sqlite, espeak-ng, MediaPipe and Blender at 64²):

- two runs of different manifests started at the same moment both finish, and a run of the same
  manifest started twice at once runs once (the other refuses, naming the running one);
- a Dask worker SIGKILLed mid-render: the run finishes, every avatar complete once, its Blender
  process gone with it, and a second run recomputes nothing;
- the whole `produce` process group SIGKILLed mid-run: a re-run takes the dead run's lock over
  and rebuilds only the avatars that were unfinished;
- a render past its timeout is killed, retried once and reported on one line; bad input in a
  compute stage is not retried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr

from infra.prefect_server import stop_server
from tests.conftest import REPO, free_port, sample

pytestmark = pytest.mark.flow

PORTRAITS = ("sfhq_pt1_00000058.jpg", "sfhq_pt1_00000161.jpg", "sfhq_pt1_00000471.jpg",
             "sfhq_pt1_00001762.jpg", "sfhq_pt1_00002342.jpg", "sfhq_pt1_00002844.jpg")
TEXTS = ("Hi there.", "Hello.", "Good day.", "Nice.", "Okay then.", "Bye now.")
LEASE = {"AVATARFLOW_RUN_LOCK_HEARTBEAT_SECONDS": "1", "AVATARFLOW_RUN_LOCK_EXPIRY_SECONDS": "10"}


class Lab:
    """One data dir and its Prefect server, shared by the tests of this module."""

    def __init__(self, work: Path):
        self.work = work
        self.data_dir = work / "data"
        self.port = str(free_port())
        self.portraits = [sample("portraits", name) for name in PORTRAITS]
        self.started: list[subprocess.Popen] = []

    def manifest(self, name: str, rows: int, first: int = 0) -> Path:
        path = self.work / f"{name}.csv"
        lines = ["id,portrait,text,resolution"]
        for n in range(first, first + rows):
            lines.append(f"{name}{n},{self.portraits[n % len(self.portraits)]},{TEXTS[n % len(TEXTS)]},64")
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, manifest: Path, workers: int = 1, **env: str) -> subprocess.Popen:
        """`avatarflow produce` as the leader of its own process group (so it can be killed whole)."""
        command = [sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir", str(self.data_dir),
                   "--prefect-port", self.port, "--workers", str(workers),
                   "--input-root", str(self.portraits[0].parent)]
        process = subprocess.Popen(command, cwd=self.work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True, env={**os.environ, **LEASE, **env})
        self.started.append(process)
        return process

    def finish(self, process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
        out, err = process.communicate(timeout=timeout)
        return process.returncode, out, err

    def summary(self, run: str) -> dict:
        return json.loads((self.data_dir / "outputs" / run / "summary.json").read_text())

    def avatars(self, run: str) -> dict[str, dict]:
        """Each avatar's attrs and stage records, read from the store."""
        root = zarr.open_group(str(self.data_dir / "avatars.zarr"), mode="r")
        found = {}
        for avatar, group in root[f"runs/{run}"].groups():
            stages = {name: dict(stage.attrs) for name, stage in group["stages"].groups()} if "stages" in group else {}
            found[avatar] = {"attrs": dict(group.attrs), "stages": stages}
        return found

    def complete(self, run: str) -> set[str]:
        try:
            return {avatar for avatar, info in self.avatars(run).items() if info["attrs"].get("complete")}
        except (KeyError, ValueError):  # the run's group does not exist yet, or is being written
            return set()


def run_of(manifest: Path) -> str:
    from tasks.batch.plan import run_name

    return run_name(manifest.resolve(), "photo")


def blender_processes(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in root.children(recursive=True):
        try:
            if any("blender_job.py" in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def is_gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_built_once_and_whole(lab: Lab, run: str, ids: list[str]) -> None:
    """Every avatar complete, with a playable video of its animation's length; no duplicates."""
    from tasks.render.runner import probe_video

    summary = lab.summary(run)
    assert sorted(summary["finished"]) == sorted(ids) and len(summary["finished"]) == len(set(summary["finished"]))
    assert summary["failed"] == []
    avatars = lab.avatars(run)
    root = zarr.open_group(str(lab.data_dir / "avatars.zarr"), mode="r")
    for avatar in ids:
        assert avatars[avatar]["attrs"]["complete"] is True
        video = probe_video(lab.data_dir / "outputs" / run / avatar / "talk.mp4")
        assert video["n_frames"] == root[f"runs/{run}/{avatar}/animation/weights"].shape[0]
        assert avatars[avatar]["stages"]["render"]["status"] == "ok"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("faults"))
    yield lab
    for process in lab.started:  # nothing this module started outlives it
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stop_server(lab.data_dir / "prefect")


def test_runs_started_together_on_a_fresh_data_dir(lab):
    """Two manifests at once both finish; the same manifest twice at once runs once."""
    first, second = lab.manifest("one", 2), lab.manifest("two", 2, first=2)
    processes = [lab.start(first), lab.start(second), lab.start(first)]
    results = [lab.finish(process) for process in processes]
    ran = [result for result in (results[0], results[2]) if result[0] == 0]
    refused = [result for result in (results[0], results[2]) if result[0] != 0]
    assert results[1][0] == 0, [r[1][-2000:] + r[2][-2000:] for r in results]
    assert len(ran) == 1 and len(refused) == 1, [r[1][-2000:] + r[2][-2000:] for r in results]
    code, out, err = refused[0]
    assert code == 2
    refusal = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(refusal) == 1 and f"run '{run_of(first)}' is already being produced" in refusal[0]
    assert "pid" in refusal[0] and "last heartbeat" in refusal[0]
    assert_built_once_and_whole(lab, run_of(first), ["one0", "one1"])
    assert_built_once_and_whole(lab, run_of(second), ["two2", "two3"])
    assert not (lab.data_dir / "locks" / f"{run_of(first)}.lock").exists()


def test_a_worker_killed_mid_render(lab):
    manifest = lab.manifest("kill", 6)
    run = run_of(manifest)
    produce = lab.start(manifest, workers=2)
    deadline = time.monotonic() + 400
    blender: list[psutil.Process] = []
    while not blender and time.monotonic() < deadline and produce.poll() is None:
        blender = blender_processes(psutil.Process(produce.pid))
        time.sleep(0.05)
    assert blender, "no render was seen running"
    worker = blender[0].parent()
    assert worker is not None and worker.pid != produce.pid
    done_before = lab.complete(run)
    worker.send_signal(signal.SIGKILL)
    code, out, err = lab.finish(produce)
    assert code == 0, out[-3000:] + err[-3000:]
    assert is_gone(blender[0]), "the killed worker's Blender process kept running"
    assert len(done_before) < 6
    assert_built_once_and_whole(lab, run, [f"kill{n}" for n in range(6)])

    again = lab.start(manifest)
    code, out, err = lab.finish(again)
    assert code == 0, out[-3000:] + err[-3000:]
    summary = lab.summary(run)
    assert sorted(summary["reused"]) == [f"kill{n}" for n in range(6)] and summary["stage_seconds"] == {}


def test_the_whole_run_killed_then_run_again(lab):
    manifest = lab.manifest("halt", 4)
    run = run_of(manifest)
    produce = lab.start(manifest)
    deadline = time.monotonic() + 400
    while not lab.complete(run) and time.monotonic() < deadline and produce.poll() is None:
        time.sleep(0.05)
    blender = blender_processes(psutil.Process(produce.pid))
    os.killpg(produce.pid, signal.SIGKILL)  # the CLI, its flow and its Dask workers
    produce.wait()
    done = lab.complete(run)
    assert 1 <= len(done) < 4, f"{len(done)} of 4 avatars were complete when the run was killed"
    before = {avatar: info["stages"] for avatar, info in lab.avatars(run).items() if avatar in done}
    lock = lab.data_dir / "locks" / f"{run}.lock"
    assert json.loads(lock.read_text())["pid"] == produce.pid  # the dead run's lease is left behind
    deadline = time.monotonic() + 5  # its Blender processes (in groups of their own) die with their workers
    while not all(is_gone(process) for process in blender) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(is_gone(process) for process in blender)

    again = lab.start(manifest)
    code, out, err = lab.finish(again)
    assert code == 0, out[-3000:] + err[-3000:]
    summary = lab.summary(run)
    assert sorted(summary["reused"]) == sorted(done)
    assert sorted(set(summary["finished"]) - set(summary["reused"])) == sorted({f"halt{n}" for n in range(4)} - done)
    after = lab.avatars(run)
    for avatar in done:  # untouched: the same stage records, with the same timestamps
        assert after[avatar]["stages"] == before[avatar]
    assert_built_once_and_whole(lab, run, [f"halt{n}" for n in range(4)])
    assert not lock.exists()


def test_a_render_past_its_timeout_is_killed_retried_and_reported(lab):
    """Every Blender job of this run is killed at a 0.3 s timeout; the render is tried twice and
    the row fails with one line. A silent audio file fails ingest once: bad input is not retried."""
    manifest = lab.manifest("hang", 1)
    with wave.open(str(lab.work / "silent.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(np.zeros(16000, "<i2").tobytes())
    manifest.write_text(manifest.read_text().replace("id,portrait,text,resolution", "id,portrait,text,resolution,audio")
                        .replace(",64\n", ",64,\n") + f"mute,{lab.portraits[1]},,64,{lab.work / 'silent.wav'}\n")
    run = run_of(manifest)
    produce = lab.start(manifest, AVATARFLOW_RENDER_TIMEOUT_SECONDS="0.3")
    code, out, err = lab.finish(produce)
    log = out + err
    assert code == 1, log[-3000:]
    failed = {failure["id"]: failure for failure in lab.summary(run)["failed"]}
    assert set(failed) == {"hang0", "mute"}
    assert failed["hang0"]["stage"] == "render"
    assert "ran past its 0.3 s timeout and was killed" in failed["hang0"]["error"]
    assert "\n" not in failed["hang0"]["error"]
    assert failed["mute"]["stage"] == "ingest" and "\n" not in failed["mute"]["error"]
    retries = [line for line in log.splitlines() if "Retry 1/1" in line]
    assert len(retries) == 1 and "render" in retries[0] and "ran past its 0.3 s timeout" in retries[0]
    # What a retry line retries follows its task run's name (the row and its stages): "… 'hang0: ingest, …' - render: …"
    retried = [line.split("' - ", 1)[-1] for line in log.splitlines() if "Retry" in line]
    assert retried and not any(text.startswith("ingest") for text in retried), retried
    assert "Retries are exhausted" in log
