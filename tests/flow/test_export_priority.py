"""Exports off the critical path. The window loop submits exports at a low Dask priority, which
reaches the scheduler through Prefect's DaskTaskRunner: of the tasks waiting for the one worker
thread, every normal one runs before any low one, whatever order they were submitted in (the
cluster's scheduler sends every ready task to its worker at once). Then the whole `produce` command on
one worker: an export never starts while another stage waits for the worker, every avatar is
complete with its GLB and .blend after its video, and the preview preset skips the exports."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import zarr
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.windows import LOW_PRIORITY, AvatarStages, RowWindows
from infra.prefect_server import ensure_server, stop_server
from stores.avatar_store import StageRef
from tasks.common.rows import AvatarRow
from tests.conftest import free_port
from tests.flow.test_produce_flow import run_cli

pytestmark = pytest.mark.flow


# --- the priority annotation, on a LocalCluster of one single-threaded worker ---------------------

def _scheduler_task_count(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


def _ran(name: str, log: str) -> StageRef:
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(name + "\n")
    return StageRef(store_url="", run="", avatar=name, stage="render", seconds=0.0,
                    info={"outputs": {}, "frames": 0, "video_seconds": 0.0, "video_published_at": time.time()})


@task(name="hold", cache_policy=NO_CACHE, persist_result=False)
def hold(expected: int, log: str) -> StageRef:
    """Keep the only worker thread busy until every other task has reached the scheduler, so that
    the order they run in is the scheduler's choice alone."""
    from distributed import get_client

    client = get_client()
    deadline = time.monotonic() + 120
    while client.run_on_scheduler(_scheduler_task_count) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {expected} tasks reached the scheduler")
        time.sleep(0.05)
    return _ran("hold", log)


@task(name="job", cache_policy=NO_CACHE, persist_result=False)
def job(name: str, log: str) -> StageRef:
    return _ran(name, log)


@flow(name="priority-order")
def run_in_priority_order(log: str) -> list[dict]:
    rows = []
    # Low-priority rows are submitted before the normal ones; each row is one stage.
    plan = [("hold", hold, 0)] + [(f"low{i}", job, LOW_PRIORITY) for i in range(3)]
    plan += [(f"normal{i}", job, 0) for i in range(3)]
    for line, (name, fn, priority) in enumerate(plan, start=2):
        stages = AvatarStages(AvatarRow(id=name, line=line, portrait="p.png", text="Hi."))
        args = (len(plan), log) if fn is hold else (name, log)
        stages.add("render", fn, *args, priority=priority)
        rows.append(stages)
    return RowWindows(window=len(plan), record=lambda outcome: outcome).run(rows)


@pytest.fixture
def prefect_api(tmp_path, monkeypatch):
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path / "prefect-home"
    url = ensure_server(home, port=free_port())
    monkeypatch.setenv("PREFECT_API_URL", url)  # the cluster's worker processes inherit it
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
            APILogWorker.drain_all()  # the run's last log lines, before the server stops
            EventsWorker.drain_all()
    finally:
        stop_server(home)


def test_low_priority_stages_wait_for_every_normal_one(prefect_api, tmp_path):
    from infra.profiles import get_profile, make_task_runner

    log = tmp_path / "ran.txt"
    runner = make_task_runner(get_profile("local", workers=1))
    outcomes = run_in_priority_order.with_options(task_runner=runner)(str(log))
    assert sorted(o["status"] for o in outcomes) == ["complete"] * 7
    order = log.read_text().split()
    assert order[0] == "hold"
    assert sorted(order[1:4]) == ["normal0", "normal1", "normal2"], order
    assert sorted(order[4:]) == ["low0", "low1", "low2"], order


@flow(name="many-rows")
def count_held_submissions(rows: int, log: str) -> int:
    """Run `rows` one-stage rows, then count the task submissions the flow process still holds."""
    import gc

    from distributed.protocol.serialize import ToPickle

    plan = []
    for line in range(rows):
        stages = AvatarStages(AvatarRow(id=f"row{line}", line=line + 2, portrait="p.png", text="Hi."))
        stages.add("render", job, f"row{line}", log)
        plan.append(stages)
    outcomes = RowWindows(window=4, record=lambda outcome: outcome).run(plan)
    assert len(outcomes) == rows
    gc.collect()
    return sum(isinstance(held, ToPickle) for held in gc.get_objects())


def test_the_flow_process_does_not_keep_settled_submissions(prefect_api, tmp_path):
    """Dask's client logs the message batches it sent, each with whole task submissions; the task
    runner bounds that log, so the flow process stays flat however many rows settle (unbounded, 40
    rows left 160 submissions held)."""
    from infra.profiles import get_profile, make_task_runner

    runner = make_task_runner(get_profile("local", workers=1))
    held = count_held_submissions.with_options(task_runner=runner)(40, str(tmp_path / "ran.txt"))
    assert held < 60, f"{held} submissions are still held after 40 rows settled"


def _unfinished_tasks(dask_scheduler) -> int:
    return sum(ts.state in ("released", "waiting", "queued", "no-worker", "processing")
               for ts in dask_scheduler.tasks.values())


@task(name="counted", cache_policy=NO_CACHE, persist_result=False)
def counted(name: str, log: str, after: StageRef | None = None) -> StageRef:
    """Log this stage's name and how many tasks the scheduler holds unfinished (itself included)."""
    from distributed import get_client

    unfinished = get_client().run_on_scheduler(_unfinished_tasks)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"{name} {unfinished}\n")
    return _ran(name, log + ".ran")


@flow(name="bounded-submissions")
def run_with_slots(rows: int, log: str) -> list[dict]:
    from prefect.context import FlowRunContext

    from infra.profiles import worker_threads

    plan = []
    for line in range(rows):
        stages = AvatarStages(AvatarRow(id=f"row{line}", line=line + 2, portrait="p.png", text="Hi."))
        render = stages.add("render", counted, f"render{line}", log)
        stages.add("export", counted, f"export{line}", log, render, priority=LOW_PRIORITY)
        plan.append(stages)
    slots = worker_threads(FlowRunContext.get().task_runner.client)
    return RowWindows(window=rows, record=lambda outcome: outcome, slots=slots).run(plan)


def test_the_flow_submits_two_chains_per_worker_thread_and_holds_exports(prefect_api, tmp_path):
    """Knowing the cluster's threads (one here), the flow keeps two normal chains in the scheduler,
    one running and one queued, and submits the exports once no normal chain is left to run; every
    row still ends complete with its export."""
    from flows.windows import IN_FLIGHT_PER_SLOT
    from infra.profiles import get_profile, make_task_runner

    log = tmp_path / "ran.txt"
    runner = make_task_runner(get_profile("local", workers=1))
    outcomes = run_with_slots.with_options(task_runner=runner)(5, str(log))
    assert sorted(o["status"] for o in outcomes) == ["complete"] * 5
    assert all(set(o["seconds"]) == {"render", "export"} for o in outcomes), outcomes
    ran = [line.split() for line in log.read_text().splitlines()]
    assert [name for name, _ in ran[:5]] == [f"render{i}" for i in range(5)], ran
    assert sorted(name for name, _ in ran[5:]) == [f"export{i}" for i in range(5)], ran
    for name, unfinished in ran[:5]:
        assert int(unfinished) <= IN_FLIGHT_PER_SLOT, f"{name} ran with {unfinished} tasks submitted: {ran}"


# --- the produce command on one worker ------------------------------------------------------------

# Two plain rows and a styled one, whose longer chain makes its render ready while exports wait.
MANIFEST = [
    ["id", "portrait", "style", "text", "resolution"],
    ["first", "astronaut.png", "", "Hello there.", "64"],
    ["second", "astronaut.png", "", "Nice to meet you.", "64"],
    ["styled", "astronaut.png", "sketch", "Drawn in pencil.", "64"],
]
# What each stage is submitted after (the flow's AvatarStages arguments).
NEEDS = {"ingest": (), "reconstruct": ("ingest",), "animate": ("ingest",), "style": ("reconstruct",),
         "render": ("reconstruct", "style", "animate"), "export": ("render",)}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    from PIL import Image
    from skimage import data

    work = tmp_path_factory.mktemp("one-worker")
    Image.fromarray(data.astronaut()).save(work / "astronaut.png")
    with (work / "manifest.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(MANIFEST)
    data_dir = work / "data"
    port = str(free_port())
    try:
        done = run_cli("produce", str(work / "manifest.csv"), "--data-dir", str(data_dir), "--workers", "1",
                       "--prefect-port", port, cwd=work)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summary = json.loads(next((data_dir / "outputs").glob("*/summary.json")).read_text())
        with (work / "preview.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(MANIFEST[:2])
        preview = run_cli("produce", str(work / "preview.csv"), "--data-dir", str(data_dir), "--workers", "1",
                          "--preset", "preview", "--prefect-port", port, cwd=work)
        assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-3000:]
    finally:
        stop_server(data_dir / "prefect")
    store = zarr.open_group(str(data_dir / "avatars.zarr"), mode="r")
    yield {"summary": summary, "store": store, "data_dir": data_dir}


def _stage_timeline(store, run: str) -> list[tuple[float, float, str, str]]:
    """(start, end, avatar, stage) of every stage of a run, in the order they ran."""
    spans = []
    for avatar in ("first", "second", "styled"):
        for stage, info in dict(store[f"runs/{run}/{avatar}"].attrs)["stages"].items():
            spans.append((info["finished_at"] - info["seconds"], info["finished_at"], avatar, stage))
    return sorted(spans)


def test_an_export_never_takes_the_worker_from_a_waiting_stage(one_worker):
    """With one single-threaded worker the stages run one at a time. When the worker picked an
    export, the stages waiting were those whose inputs were done before the task it had just
    finished: none of them may run after the export."""
    timeline = _stage_timeline(one_worker["store"], one_worker["summary"]["run"])
    position = {(avatar, stage): index for index, (_, _, avatar, stage) in enumerate(timeline)}
    assert sum(stage == "export" for *_, stage in timeline) == 3
    for index, (_, _, avatar, stage) in enumerate(timeline):
        if stage != "export":
            continue
        for later, (_, _, other, waiting) in enumerate(timeline[index + 1:], start=index + 1):
            if waiting == "export":
                continue
            inputs = [position[(other, need)] for need in NEEDS[waiting] if (other, need) in position]
            assert max(inputs, default=-1) >= index - 1, (
                f"{avatar}'s export ran while {other}'s {waiting} was waiting: {[t[2:] for t in timeline]}")


def test_every_avatar_is_complete_with_its_exports_after_its_video(one_worker):
    summary, store = one_worker["summary"], one_worker["store"]
    assert sorted(summary["finished"]) == ["first", "second", "styled"]
    folder = Path(summary["output_folder"])
    last_video = last_export = 0.0
    for avatar in summary["finished"]:
        attrs = dict(store[f"runs/{summary['run']}/{avatar}"].attrs)
        assert attrs["complete"] is True and set(attrs["outputs"]) == {"video", "poster", "glb", "blend"}
        for name in ("talk.mp4", "poster.png", "avatar.glb", "avatar.blend"):
            assert (folder / avatar / name).stat().st_size > 0, f"{avatar}/{name}"
        render, export = attrs["stages"]["render"], attrs["stages"]["export"]
        assert render["video_published_at"] <= export["finished_at"] - export["seconds"]
        last_video = max(last_video, render["video_published_at"])
        last_export = max(last_export, export["finished_at"])
    # The time to the last MP4 leaves out the exports that landed after it.
    assert 0 < summary["video_wall_seconds"] <= summary["wall_seconds"] - (last_export - last_video)
    assert summary["stage_seconds"]["export"] > 0


def test_the_preview_preset_skips_the_exports(one_worker):
    outputs = one_worker["data_dir"] / "outputs"
    preview = [json.loads(path.read_text()) for path in outputs.glob("*/summary.json")
               if json.loads(path.read_text())["preset"] == "preview"]
    assert len(preview) == 1
    summary = preview[0]
    assert summary["finished"] == ["first"]
    assert "export" not in summary["stage_seconds"] and summary["stage_seconds"]["render"] > 0
    folder = Path(summary["output_folder"])
    for avatar in summary["finished"]:
        assert sorted(p.name for p in (folder / avatar).iterdir()) == ["poster.png", "talk.mp4"]
        attrs = dict(one_worker["store"][f"runs/{summary['run']}/{avatar}"].attrs)
        assert attrs["complete"] is True and set(attrs["outputs"]) == {"video", "poster"}
        assert "export" not in attrs["stages"]
