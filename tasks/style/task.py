"""Style task: the rig's photo texture (and its canonical-UV albedo) stylised after a preset or a
style image; the stylised texture is what the render stage then uses."""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from stores.avatar_store import StageRef
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.common.stage_task import run_stage
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_image, resolve_input_path
from tasks.style.config import StyleConfig
from tasks.style.metrics import content_landmark_error
from tasks.style.presets import STYLE_PRESETS, resolve_style
from tasks.style.transfer import stylise


def style_image(value: str, manifest_dir: str, ingest: IngestConfig) -> tuple[str, np.ndarray]:
    """A preset's image, or a style image read like any other input (allowed roots, size limits)."""
    if value in STYLE_PRESETS:
        return resolve_style(value)
    try:
        path = resolve_input_path(value, manifest_dir, ingest)
    except AvatarInputError as error:
        raise AvatarInputError(f"style {value!r} is neither a preset ({', '.join(STYLE_PRESETS)}) "
                               f"nor a usable image: {error}") from None
    if _names_a_preset(value) and not path.exists():
        raise AvatarInputError(f"unknown style preset {value!r}; the presets are {', '.join(STYLE_PRESETS)} "
                               "(or give a style image path)")
    return path.name, load_image(path, ingest)


def _names_a_preset(value: str) -> bool:
    """A bare word (no folder, no file extension) is meant as a preset name, not as an image path."""
    return not any(sep in value for sep in ("/", "\\", ".", ":"))


@task(name="style", cache_policy=NO_CACHE, persist_result=False)
def stylise_avatar(rig: StageRef, row: AvatarRow, manifest_dir: str, config: StyleConfig, ingest: IngestConfig):
    run = rig.run

    def compute(store):
        name, style = style_image(row.style_name, manifest_dir, ingest)
        texture = store.read(run, row.id, rig.arrays["texture_photo"].name)
        side = texture.shape[1]
        photo = np.ascontiguousarray(texture[:side])  # rows below are the mouth-colour band
        result = stylise(photo, style, config, seed=row.seed)
        styled = texture.copy()
        styled[:side] = result.image
        landmark_error = content_landmark_error(photo, result.image)
        if landmark_error == float("inf"):
            raise AvatarInputError(f"style {name!r} hid the face: MediaPipe finds no face on the stylised texture")
        metrics = {"style": name, "gram_loss_before": round(result.gram_loss_before, 6),
                   "gram_loss_after": round(result.gram_loss_after, 6),
                   "gram_loss_reduction": round(1.0 - result.gram_loss_after / max(result.gram_loss_before, 1e-12), 4),
                   "content_landmark_error": None if landmark_error is None else round(landmark_error, 4)}
        arrays = {"texture_photo": store.write(run, row.id, "texture/styled", styled, attrs=metrics)}
        return arrays, {"record": metrics}

    return run_stage("style", rig.store_url, run, row.id, compute)
