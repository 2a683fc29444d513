"""Render tasks. `render` (the deliverable that is waited for): one Blender job renders the MP4
frames and the poster, PyAV muxes the speech in (in this process), and both are published under
outputs/<run>/<avatar>/. `export` (off the critical path, submitted at low priority): a second
Blender job writes the GLB and the .blend. The avatar is marked complete by the last of them that
runs: export when the settings ask for a GLB or a .blend, else render. Blender works in a scratch
folder in the worker's own temp dir, removed once the files are published."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from stores.avatar_store import AvatarStore, StageRef
from stores.outputs import RunOutputs, publish_file
from tasks.common.arkit import ARKIT_NAMES
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.common.retries import RENDER_RETRIES, RETRY_DELAY_SECONDS, retry_unless_bad_input
from tasks.common.stage_task import run_stage
from tasks.quality.video_faces import check_video_faces
from tasks.render.config import RenderConfig
from tasks.render.runner import job_outputs, mux_audio, run_blender_job, write_job

RIG_ARRAYS = {
    "vertices": "mesh/vertices",
    "faces": "mesh/faces",
    "uv_photo": "mesh/uv",
    "uv_canonical": "mesh/uv_canonical",
    "pivot": "mesh/pivot",
    "deltas": "blendshapes/deltas",
    "texture": "texture/photo",
    "weights": "animation/weights",
    "head_pose": "animation/head_pose",
}
RENDER_OUTPUTS = ("video", "poster", "frames_dir")
"""What the render job writes: the frames' outputs."""
EXPORT_OUTPUTS = ("glb", "blend")
"""What the export job writes: the scene's outputs."""


def wants_exports(config: RenderConfig) -> bool:
    """Whether the export task runs at all: a preset may turn both exports off."""
    return config.write_glb or config.write_blend


def outputs_for(config: RenderConfig, kinds: tuple[str, ...]) -> dict[str, str | None]:
    """A job's "outputs" entry holding only `kinds` (each still subject to the config's switches)."""
    return {key: name if key in kinds else None for key, name in job_outputs(config).items()}


@task(name="render", retries=RENDER_RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS,
      retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, persist_result=False)
def render_avatar(rig: StageRef, motion: StageRef, row: AvatarRow, data_dir: str, config: RenderConfig):
    run = rig.run
    outputs = RunOutputs(data_dir, run)

    def compute(store):
        audio = store.read(run, row.id, "input/audio")
        sample_rate = int(store.array_attrs(run, row.id, "input/audio")["sample_rate"])
        with _blender_job(store, rig, row, config, RENDER_OUTPUTS) as (job_dir, result, written):
            talk = mux_audio(written["video"], audio, sample_rate, job_dir / "talk.mp4")
            face_check = _check_generated_face(talk) if row.generate_seed is not None else None
            published = {"video": str(publish_file(talk, outputs.avatar_file(row.id, "video")))}
            published_at = time.time()
            published["poster"] = str(publish_file(written["poster"], outputs.avatar_file(row.id, "poster")))
            refs = {}
            if config.keep_frames and "frames_dir" in written:
                refs["frames"] = _store_frames(store, run, row.id, written["frames_dir"])
        frames = int(result["frames"])
        record = {"video_published_at": published_at, **({"face_check": face_check} if face_check else {})}
        return refs, {"frames": frames, "outputs": published, "video_seconds": frames / row.fps,
                      "video_published_at": published_at, "blender_seconds": result.get("seconds", {}),
                      "record": record}

    def finish(store, info):
        if not wants_exports(config):  # nothing follows: the avatar is complete now
            _mark_complete(store, run, row, config, info)

    return run_stage("render", rig.store_url, run, row.id, compute, finish)


@task(name="export", retries=RENDER_RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS,
      retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, persist_result=False)
def export_avatar(rig: StageRef, rendered: StageRef, row: AvatarRow, data_dir: str, config: RenderConfig):
    """The GLB and the .blend of a rendered avatar; then the avatar is complete."""
    run = rig.run
    outputs = RunOutputs(data_dir, run)
    # Nothing is rendered here, so a lit-mode job that insists on a GPU may run on any worker.
    settings = dataclasses.replace(config, cycles_device="auto") if config.cycles_device == "gpu" else config

    def compute(store):
        with _blender_job(store, rig, row, settings, EXPORT_OUTPUTS) as (_, result, written):
            published = {kind: str(publish_file(written[kind], outputs.avatar_file(row.id, kind)))
                         for kind in EXPORT_OUTPUTS if kind in written}
        return {}, {"outputs": published, "blender_seconds": result.get("seconds", {})}

    def finish(store, info):
        _mark_complete(store, run, row, config, rendered.info, exported=info)

    return run_stage("export", rig.store_url, run, row.id, compute, finish)


@contextmanager
def _blender_job(store: AvatarStore, rig: StageRef, row: AvatarRow, config: RenderConfig, kinds: tuple[str, ...]):
    """Write a job asking for `kinds` from the avatar's store arrays, run it, and yield (job_dir,
    result, written paths); the scratch folder is removed on the way out."""
    names = dict(RIG_ARRAYS)
    if "texture_photo" in rig.arrays:  # the style stage's texture, when it ran
        names["texture"] = rig.arrays["texture_photo"].name
    arrays = {key: store.read(rig.run, row.id, name) for key, name in names.items()}
    # Scratch stays on this worker (each attempt gets a fresh folder); only published files are shared.
    job_dir = Path(tempfile.mkdtemp(prefix=f"avatarflow-{kinds[0]}-{row.id}-"))
    try:
        job_path = write_job(job_dir, **arrays, settings=config, fps=row.fps, resolution=row.resolution,
                             seed=row.seed, shape_key_names=ARKIT_NAMES, outputs=outputs_for(config, kinds))
        result = run_blender_job(job_path, timeout_s=config.timeout_seconds, jobs_per_blender=config.jobs_per_blender)
        yield job_dir, result, {k: Path(v) for k, v in result["paths"].items()}
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _mark_complete(store: AvatarStore, run: str, row: AvatarRow, config: RenderConfig, rendered: dict,
                   exported: dict | None = None) -> None:
    """The avatar's outputs (video, poster, and the GLB and .blend when exported) and its render
    summary, then `complete`, as the last write."""
    render = {"frames": rendered["frames"], "fps": row.fps, "mode": config.mode,
              "blender_seconds": rendered["blender_seconds"],
              "video_published_at": rendered["video_published_at"]}
    outputs = dict(rendered["outputs"])
    if exported is not None:
        outputs.update(exported["outputs"])
        render["export_blender_seconds"] = exported["blender_seconds"]
    store.mark_complete(run, row.id, outputs, seeds={"animation": row.seed}, render=render)


def _check_generated_face(video: Path) -> dict:
    """A generated identity is finished only if its render shows a face (checked before publishing)."""
    check = check_video_faces(video)
    if not check.passed:
        raise AvatarInputError(f"the rendered video shows a face in only {check.with_face} of {check.checked} frames "
                               f"checked ({check.share:.0%} < {check.min_share:.0%}); try another seed or a "
                               "better-trained model", record={"face_check": check.as_record()})
    return check.as_record()


def _store_frames(store, run: str, avatar: str, frames_dir: Path):
    from PIL import Image

    paths = sorted(Path(frames_dir).glob("*.png"))
    first = np.asarray(Image.open(paths[0]).convert("RGB"))
    frames = store.create(run, avatar, "render/frames", (len(paths), *first.shape), np.uint8,
                          chunks=(1, *first.shape))
    for index, path in enumerate(paths):  # one frame in memory at a time
        frames[index] = np.asarray(Image.open(path).convert("RGB"))
    return store.ref(run, avatar, "render/frames")
