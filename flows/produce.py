"""The production flow: manifest → for every row, ingest → [generate | refine] → reconstruct →
[style] ∥ animate → render."""

from __future__ import annotations

from prefect import flow

from avatarflow.presets import get_preset
from flows.outcomes import row_outcome
from infra.profiles import get_profile, gpu_slot, make_task_runner
from tasks.animate.task import animate_avatar
from tasks.batch.task import plan_run, publish_run
from tasks.identity.task import generate_avatar_identity, refine_avatar_portrait
from tasks.ingest.task import ingest_avatar
from tasks.reconstruct.task import reconstruct_avatar
from tasks.render.task import render_avatar
from tasks.style.task import stylise_avatar


# Deployments run with the local profile; the CLI swaps in the profile it was given.
@flow(name="produce", task_runner=make_task_runner(get_profile("local")))
def produce(manifest: str, data_dir: str = "avatarflow-data", preset: str = "photo",
            input_roots: list[str] | None = None, gpu_tasks: bool = False) -> dict:
    config = get_preset(preset).with_input_roots(tuple(input_roots or ()))
    plan = plan_run(manifest, data_dir, preset, config)
    chains = {}
    for row in plan.pending:
        chain = chains[row] = {}
        chain["ingest"] = face = ingest_avatar.submit(plan.store_url, plan.run, row, plan.manifest_dir, config.ingest)
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
        chain["animate"] = motion = animate_avatar.submit(chain["ingest"], row, config.animate)
        with gpu_slot(gpu_tasks):
            chain["render"] = render_avatar.submit(rig, motion, row, plan.data_dir, config.render)
    outcomes = [row_outcome(row, chain) for row, chain in chains.items()]
    return publish_run(plan, outcomes, preset, config)
