"""Render task: one Blender process per avatar renders the MP4 frames, GLB, .blend and poster;
ffmpeg muxes the speech in; the files are published under outputs/<run>/<avatar>/. Blender works
in a scratch folder in the worker's own temp dir, removed once the files are published."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from stores.avatar_store import StageRef
from stores.outputs import RunOutputs, publish_file
from tasks.common.arkit import ARKIT_NAMES
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.common.retries import RENDER_RETRIES, RETRY_DELAY_SECONDS, retry_unless_bad_input
from tasks.common.stage_task import run_stage
from tasks.quality.video_faces import check_video_faces
from tasks.render.config import RenderConfig
from tasks.render.runner import mux_audio, run_blender_job, write_job

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


@task(name="render", retries=RENDER_RETRIES, retry_delay_seconds=RETRY_DELAY_SECONDS,
      retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE, persist_result=False)
def render_avatar(rig: StageRef, motion: StageRef, row: AvatarRow, data_dir: str, config: RenderConfig):
    run = rig.run
    outputs = RunOutputs(data_dir, run)

    def compute(store):
        names = dict(RIG_ARRAYS)
        if "texture_photo" in rig.arrays:  # the style stage's texture, when it ran
            names["texture"] = rig.arrays["texture_photo"].name
        arrays = {key: store.read(run, row.id, name) for key, name in names.items()}
        audio = store.read(run, row.id, "input/audio")
        sample_rate = int(store.array_attrs(run, row.id, "input/audio")["sample_rate"])
        # Scratch stays on this worker (each attempt gets a fresh folder); only published files are shared.
        job_dir = Path(tempfile.mkdtemp(prefix=f"avatarflow-render-{row.id}-"))
        try:
            job_path = write_job(job_dir, **arrays, settings=config, fps=row.fps, resolution=row.resolution,
                                 seed=row.seed, shape_key_names=ARKIT_NAMES)
            result = run_blender_job(job_path, timeout_s=config.timeout_seconds)
            written = {k: Path(v) for k, v in result["paths"].items()}
            talk = mux_audio(written["video"], audio, sample_rate, job_dir / "talk.mp4")
            face_check = _check_generated_face(talk) if row.generate_seed is not None else None
            published = {"video": str(publish_file(talk, outputs.avatar_file(row.id, "video")))}
            for kind in ("glb", "blend", "poster"):
                if kind in written:
                    published[kind] = str(publish_file(written[kind], outputs.avatar_file(row.id, kind)))
            refs = {}
            if config.keep_frames and "frames_dir" in written:
                refs["frames"] = _store_frames(store, run, row.id, written["frames_dir"])
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        frames = int(result["frames"])
        return refs, {"frames": frames, "outputs": published, "video_seconds": frames / row.fps,
                      "blender_seconds": result.get("seconds", {}),
                      **({"record": {"face_check": face_check}} if face_check else {})}

    def finish(store, info):
        store.mark_complete(run, row.id, info["outputs"], seeds={"animation": row.seed},
                            render={"frames": info["frames"], "fps": row.fps, "mode": config.mode,
                                    "blender_seconds": info["blender_seconds"]})

    return run_stage("render", rig.store_url, run, row.id, compute, finish)


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
