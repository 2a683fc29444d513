"""The production flow: manifest → for every row, ingest → [track] → [generate | refine] →
reconstruct → [style] ∥ animate (or, for a driving video, capture) → render → [export]."""

from __future__ import annotations

from prefect import flow
from prefect.context import FlowRunContext

from avatarflow.presets import PipelineConfig, get_preset
from flows.windows import LOW_PRIORITY, AvatarStages, RowWindows
from infra.prefect_server import without_flow_heartbeats
from infra.profiles import get_profile, make_task_runner, start_workers_early, worker_threads
from stores.location import allowed_input_roots
from stores.run_lock import hold_run_lock
from stores.tracking import prepare_tracking
from tasks.animate.task import animate_avatar
from tasks.batch.config import BatchConfig
from tasks.batch.monitoring import RunProgress
from tasks.batch.plan import RunPlan, run_name
from tasks.capture.task import capture_motion, track_video
from tasks.batch.task import plan_run, publish_run, write_interrupted_run
from tasks.identity.task import generate_avatar_identity, refine_avatar_portrait
from tasks.ingest.task import ingest_avatar
from tasks.reconstruct.task import reconstruct_avatar
from tasks.render.task import export_avatar, render_avatar, wants_exports
from tasks.style.task import stylise_avatar


@flow(name="produce")
def produce(manifest: str, data_dir: str = "avatarflow-data", preset: str = "photo",
            input_roots: list[str] | str | None = None, profile: str | None = None,
            dask_address: str | None = None, workers: int | None = None, window: int | None = None) -> dict:
    """Produce every row of a manifest. The execution profile (local, gpu, or cluster with an
    address) is resolved now, when the run starts, so a deployment or a caller can choose it.
    `input_roots` may be a comma-separated string (a deployment's template gives one). `window`:
    rows in flight at once (default AVATARFLOW_ROWS_IN_FLIGHT, else 64). The run lock is held here,
    in the flow's own process, until the workers have stopped. Exports run at low priority, after
    every other ready stage."""
    if isinstance(input_roots, str):
        input_roots = [root.strip() for root in input_roots.split(",") if root.strip()]
    execution = get_profile(profile, dask_address, workers)
    batch = BatchConfig.from_environment(window)
    produce_avatars_on = produce_avatars.with_options(task_runner=make_task_runner(execution))
    run = run_name(manifest, preset)
    # This flow's heartbeats, where it sends them, cover the process; the subflow's would only hold its end.
    with hold_run_lock(data_dir, run), without_flow_heartbeats():
        return produce_avatars_on(manifest, data_dir, preset, input_roots, execution.gpu_tasks, run, batch)


@flow(name="produce-avatars")
def produce_avatars(manifest: str, data_dir: str, preset: str, input_roots: list[str] | None,
                    gpu_tasks: bool, run: str, batch: BatchConfig) -> dict:
    config = get_preset(preset).with_input_roots(allowed_input_roots(data_dir, input_roots))
    workers = start_workers_early(FlowRunContext.get().task_runner)  # they start while the run is planned
    try:
        plan = plan_run(manifest, data_dir, preset, config, run)
    finally:
        client = workers.result()
    progress = RunProgress.start(plan, batch)  # a progress artifact; failed rows also emit failure events
    windows = RowWindows(batch.window, progress.record, slots=worker_threads(client))
    try:
        # MLflow (seconds of imports, and a fresh database's schema) is needed only when the run is
        # published: it loads beside the first stages, not before them.
        outcomes = windows.run((avatar_stages(row, plan, config, gpu_tasks) for row in plan.pending),
                               started=lambda: prepare_tracking(data_dir))
    except BaseException:  # Ctrl-C, SIGTERM: report the rows that settled and those that did not
        write_interrupted_run(plan, windows.outcomes, windows.unfinished(plan.pending), preset)
        raise
    return publish_run(plan, outcomes, preset, config, batch)


def avatar_stages(row, plan: RunPlan, config: PipelineConfig, gpu_tasks: bool) -> AvatarStages:
    """One row's stages; each is submitted once the stages whose results it takes have completed."""
    stages = AvatarStages(row)
    face = ingested = stages.add("ingest", ingest_avatar, plan.store_url, plan.run, row, plan.manifest_dir, config.ingest)
    if row.video is not None:
        tracked = stages.add("track", track_video, face, row, plan.manifest_dir, config.capture, config.ingest)
        if row.portrait is None and row.identity is None:
            face = tracked  # the video's best frame is the portrait
    if row.generate_seed is not None:
        face = stages.add("generate", generate_avatar_identity, face, row, plan.data_dir, config.identity, gpu=gpu_tasks)
    elif row.refine:
        face = stages.add("refine", refine_avatar_portrait, face, row, plan.data_dir, config.identity, gpu=gpu_tasks)
    rig = stages.add("reconstruct", reconstruct_avatar, face, row, config.reconstruct)
    if row.style_name is not None:
        rig = stages.add("style", stylise_avatar, rig, row, plan.manifest_dir, config.style, config.ingest, plan.data_dir,
                         gpu=gpu_tasks)
    if row.video is not None:  # the driving video's performance replaces speech animation
        motion = stages.add("capture", capture_motion, rig, tracked, row, config.capture, config.animate)
    else:
        motion = stages.add("animate", animate_avatar, ingested, row, config.animate)
    # Cycles uses the GPU; Workbench does not.
    rendered = stages.add("render", render_avatar, rig, motion, row, plan.data_dir, config.render,
                          gpu=gpu_tasks and config.render.mode == "lit")
    if wants_exports(config.render):  # the MP4 is what is waited for: GLB and .blend come after every ready render
        stages.add("export", export_avatar, rig, rendered, row, plan.data_dir, config.render, priority=LOW_PRIORITY)
    return stages
