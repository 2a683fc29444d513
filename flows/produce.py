"""The production flow: manifest → for every row, ingest → [track] → [generate | refine] →
reconstruct → [style] ∥ animate (or, for a driving video, capture) → render."""

from __future__ import annotations

from prefect import flow

from avatarflow.presets import get_preset
from flows.outcomes import row_outcome
from infra.profiles import get_profile, gpu_slot, make_task_runner
from stores.location import allowed_input_roots
from tasks.animate.task import animate_avatar
from tasks.batch.monitoring import RunProgress
from tasks.capture.task import capture_motion, track_video
from tasks.batch.task import plan_run, publish_run
from tasks.identity.task import generate_avatar_identity, refine_avatar_portrait
from tasks.ingest.task import ingest_avatar
from tasks.reconstruct.task import reconstruct_avatar
from tasks.render.task import render_avatar
from tasks.style.task import stylise_avatar


@flow(name="produce")
def produce(manifest: str, data_dir: str = "avatarflow-data", preset: str = "photo",
            input_roots: list[str] | str | None = None, profile: str | None = None,
            dask_address: str | None = None, workers: int | None = None) -> dict:
    """Produce every row of a manifest. The execution profile (local, gpu, or cluster with an
    address) is resolved now, when the run starts, so a deployment or a caller can choose it.
    `input_roots` may be a comma-separated string (a deployment's template gives one)."""
    if isinstance(input_roots, str):
        input_roots = [root.strip() for root in input_roots.split(",") if root.strip()]
    execution = get_profile(profile, dask_address, workers)
    produce_avatars_on = produce_avatars.with_options(task_runner=make_task_runner(execution))
    return produce_avatars_on(manifest, data_dir, preset, input_roots, execution.gpu_tasks)


@flow(name="produce-avatars")
def produce_avatars(manifest: str, data_dir: str, preset: str, input_roots: list[str] | None,
                    gpu_tasks: bool) -> dict:
    config = get_preset(preset).with_input_roots(allowed_input_roots(data_dir, input_roots))
    plan = plan_run(manifest, data_dir, preset, config)
    chains = {}
    for row in plan.pending:
        chain = chains[row] = {}
        chain["ingest"] = face = ingest_avatar.submit(plan.store_url, plan.run, row, plan.manifest_dir, config.ingest)
        if row.video is not None:
            chain["track"] = tracked = track_video.submit(face, row, plan.manifest_dir, config.capture, config.ingest)
            if row.portrait is None and row.identity is None:
                face = tracked  # the video's best frame is the portrait
        if row.generate_seed is not None:
            with gpu_slot(gpu_tasks):
                chain["generate"] = face = generate_avatar_identity.submit(face, row, plan.data_dir, config.identity)
        elif row.refine:
            with gpu_slot(gpu_tasks):
                chain["refine"] = face = refine_avatar_portrait.submit(face, row, plan.data_dir, config.identity)
        chain["reconstruct"] = rig = reconstruct_avatar.submit(face, row, config.reconstruct)
        if row.style_name is not None:
            with gpu_slot(gpu_tasks):
                chain["style"] = rig = stylise_avatar.submit(rig, row, plan.manifest_dir, config.style, config.ingest)
        if row.video is not None:  # the driving video's performance replaces speech animation
            chain["capture"] = motion = capture_motion.submit(rig, tracked, row, config.capture, config.animate)
        else:
            chain["animate"] = motion = animate_avatar.submit(chain["ingest"], row, config.animate)
        with gpu_slot(gpu_tasks and config.render.mode == "lit"):  # Cycles uses the GPU; Workbench does not
            chain["render"] = render_avatar.submit(rig, motion, row, plan.data_dir, config.render)
    progress = RunProgress.start(plan)  # a progress artifact; failed rows also emit failure events
    outcomes = [progress.record(row_outcome(row, chain)) for row, chain in chains.items()]
    return publish_run(plan, outcomes, preset, config)
