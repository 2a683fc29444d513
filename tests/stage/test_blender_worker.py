"""A long-lived Blender process takes many real jobs in turn: same pixels as a one-shot process,
flat memory over 100 jobs, an empty scene between jobs, replaced after N jobs and after any
failure (error, crash, timeout), one job at a time, and not killed when the thread that started
it ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from tasks.render.blender_worker import BLENDER_JOB_SCRIPT, BlenderWorker, RenderError, run_one_shot
from tasks.render.config import RenderConfig
from tasks.render.runner import write_job
from tests.render_rig import PORTRAIT, make_animation, make_rig, make_texture
from tests.unit.test_render_runner import tiny_rig

TINY = RenderConfig()  # every output: poster, video, GLB, .blend


def tiny_job(folder: Path, seed: int = 0, n_frames: int = 2, settings: RenderConfig = TINY) -> Path:
    """A two-triangle rig, a few frames at 16^2."""
    return write_job(folder, **tiny_rig(seed=seed, n_frames=n_frames), settings=settings, fps=25,
                     resolution=16, seed=seed)


def long_job(folder: Path) -> Path:
    """A real job long enough (many 64^2 frames) to be caught mid-render."""
    return write_job(folder, **tiny_rig(n_frames=5000), settings=RenderConfig(), fps=25, resolution=64, seed=0)


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def blender_children() -> list[psutil.Process]:
    return [child for child in psutil.Process().children(recursive=True)
            if any(str(BLENDER_JOB_SCRIPT) in part for part in child.cmdline())]


@pytest.fixture
def worker():
    pool = BlenderWorker()
    yield pool
    pool.close()


def wait_for_text(path: Path, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def serving_pid(job_path: Path) -> int:
    """The pid of the serving process that ran a job, from the job's log."""
    log = (job_path.parent / "blender.log").read_text()
    assert log.count("(serving process ") == 1, log[-2000:]
    return int(log.split("(serving process ")[1].split(")")[0])


def test_memory_stays_flat_over_100_jobs_in_one_process(worker, tmp_path):
    pids, rss = set(), {}
    for index in range(1, 101):
        job_path = tiny_job(tmp_path / f"job{index}", seed=index)
        result = worker.run(job_path, timeout_s=120, jobs_per_blender=200)
        assert set(result["paths"]) == {"video", "poster", "glb", "blend"} and result["frames"] == 2
        assert (job_path.parent / "result.json").is_file()
        pids.add(worker.pid)
        # the scene was emptied after the job: nothing of it is left, not even orphan data
        assert worker.ready is not None and set(worker.ready["left"].values()) == {0}, worker.ready
        if index in (10, 100):
            rss[index] = psutil.Process(worker.pid).memory_info().rss
        shutil.rmtree(job_path.parent)  # keeps the disk use small
    assert len(pids) == 1, "the jobs did not all run in one process"
    growth_mb = (rss[100] - rss[10]) / 2**20
    assert growth_mb < 30, f"RSS grew by {growth_mb:.1f} MB from job 10 to job 100"


def test_replaced_after_n_jobs(worker, tmp_path):
    pids = []
    for index in range(7):
        job_path = tiny_job(tmp_path / f"job{index}", seed=index)
        worker.run(job_path, timeout_s=120, jobs_per_blender=3)
        pids.append(serving_pid(job_path))
        if index % 3 == 2:  # the third job of a process retires it at once
            assert worker.pid is None and is_gone(pids[-1])
        else:
            assert worker.pid == pids[-1]
    first, second, third = pids[0], pids[3], pids[6]
    assert pids == [first] * 3 + [second] * 3 + [third]
    assert len({first, second, third}) == 3


def test_a_job_error_replaces_the_process_and_the_next_job_succeeds(worker, tmp_path):
    worker.run(tiny_job(tmp_path / "good1"), timeout_s=120)
    first = worker.pid
    bad = tiny_job(tmp_path / "bad")
    (bad.parent / "rig.npz").write_bytes(b"not an npz")
    with pytest.raises(RenderError, match="Blender job .* failed: ") as failure:
        worker.run(bad, timeout_s=120)
    assert "\n" not in str(failure.value).split("; log ")[0]  # one line, then the log's end
    assert "job failed" in str(failure.value)  # the log's end holds the traceback's header
    assert worker.pid is None and is_gone(first)
    result = worker.run(tiny_job(tmp_path / "good2"), timeout_s=120)
    assert worker.pid not in (None, first) and result["frames"] == 2


def test_a_process_killed_mid_job_costs_that_job_only(worker, tmp_path):
    worker.run(tiny_job(tmp_path / "warm"), timeout_s=120)
    victim = worker.pid
    job_path = long_job(tmp_path / "long")

    def kill_mid_render() -> None:
        wait_for_text(job_path.parent / "blender.log", "Video append frame 20")
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_mid_render)
    killer.start()
    try:
        with pytest.raises(RenderError, match=rf"its Blender process {victim} died mid-job \(killed by SIGKILL\)"):
            worker.run(job_path, timeout_s=300)
    finally:
        killer.join()
    assert not (job_path.parent / "result.json").exists()
    result = worker.run(tiny_job(tmp_path / "after"), timeout_s=120)
    assert result["frames"] == 2 and worker.pid != victim


def test_a_process_that_died_between_jobs_costs_no_job(worker, tmp_path):
    worker.run(tiny_job(tmp_path / "before"), timeout_s=120)
    idle = worker.pid
    os.kill(idle, signal.SIGKILL)
    time.sleep(0.5)
    after = tiny_job(tmp_path / "after")
    result = worker.run(after, timeout_s=120)
    assert result["frames"] == 2 and serving_pid(after) not in (None, idle)


def test_a_timeout_kills_the_process_group_and_replaces_it(worker, tmp_path):
    worker.run(tiny_job(tmp_path / "warm"), timeout_s=120)
    first = worker.pid
    started = time.monotonic()
    with pytest.raises(RenderError, match=r"ran past its 3 s timeout and was killed"):
        worker.run(long_job(tmp_path / "long"), timeout_s=3)
    assert time.monotonic() - started < 60
    assert is_gone(first) and blender_children() == []
    result = worker.run(tiny_job(tmp_path / "after"), timeout_s=120)
    assert result["frames"] == 2 and worker.pid != first


def test_one_job_at_a_time_from_many_threads(worker, tmp_path):
    """Jobs sent from three threads at once run in turn on the one process."""
    jobs = [tiny_job(tmp_path / f"job{index}", seed=index, n_frames=10) for index in range(3)]
    errors = []

    def run(job_path: Path) -> None:
        try:
            worker.run(job_path, timeout_s=120)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {serving_pid(job_path) for job_path in jobs} == {worker.pid}
    spans = sorted(log_span(job_path.parent / "blender.log") for job_path in jobs)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, f"two jobs overlapped: {spans}"


def log_span(log: Path) -> tuple[datetime, datetime]:
    """When a job's log says it started and when it wrote its result."""
    stamps = {}
    for line in log.read_text().splitlines():
        for key, marker in (("start", "(serving process"), ("end", "wrote ")):
            if marker in line:
                stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamps["start"], stamps["end"]


def test_the_thread_that_started_blender_may_end(worker, tmp_path):
    """Linux sends the death signal when the *thread* that forked a child ends; the process must
    survive the worker thread that happened to start it."""
    first = tiny_job(tmp_path / "a")
    thread = threading.Thread(target=worker.run, args=(first,), kwargs={"timeout_s": 120})
    thread.start()
    thread.join()
    time.sleep(0.5)
    pid = serving_pid(first)
    assert not is_gone(pid)
    second = tiny_job(tmp_path / "b")
    worker.run(second, timeout_s=120)
    assert serving_pid(second) == pid


def frames_of(result: dict) -> dict[str, np.ndarray]:
    """Every picture a job wrote: poster, PNG frames, and the MP4 decoded to RGB."""
    paths = result["paths"]
    pictures = {"poster": np.asarray(Image.open(paths["poster"]))}
    for frame in sorted(Path(paths["frames_dir"]).glob("*.png")):
        pictures[frame.name] = np.asarray(Image.open(frame))
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", paths["video"], "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             capture_output=True, check=True).stdout
    pictures["video"] = np.frombuffer(decoded, np.uint8)
    return pictures


@pytest.mark.parametrize("mode", ["photo", "lit"])
def test_a_reused_process_renders_the_same_pixels_as_a_fresh_one(worker, tmp_path, mode):
    assert PORTRAIT.is_file(), f"sample portrait missing: {PORTRAIT}"
    size, n_frames = 32, 3
    settings = RenderConfig(mode=mode, cycles_samples=2, cycles_device="cpu", keep_frames=True)
    weights, head_pose = make_animation(n_frames, pose_from=1)
    arrays = dict(**make_rig(size, grid=9), texture=make_texture(size), weights=weights, head_pose=head_pose)

    def job(folder: Path) -> Path:
        return write_job(folder, **arrays, settings=settings, fps=25, resolution=size, seed=5)

    # the reused process first renders other jobs: the other mode, another rig and texture
    other_mode = "lit" if mode == "photo" else "photo"
    worker.run(tiny_job(tmp_path / "before1", seed=3, settings=RenderConfig(mode=other_mode, cycles_samples=1,
                                                                             cycles_device="cpu")), timeout_s=120)
    worker.run(tiny_job(tmp_path / "before2", seed=4, n_frames=5), timeout_s=120)
    reused_pid = worker.pid
    reused = worker.run(job(tmp_path / "reused"), timeout_s=300)
    assert worker.pid == reused_pid
    fresh = run_one_shot(job(tmp_path / "fresh"), timeout_s=300)
    assert "serving process" not in (tmp_path / "fresh" / "blender.log").read_text()
    ours, theirs = frames_of(reused), frames_of(fresh)
    assert set(ours) == set(theirs) and len(ours) == 2 + n_frames
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    assert reused["animation_max_error"] == fresh["animation_max_error"]
