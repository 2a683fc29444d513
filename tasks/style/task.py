"""Style task: the rig's photo texture (and its canonical-UV albedo) stylised after a preset or a
style image; the stylised texture is what the render stage then uses.

A preset with a promoted feed-forward network (avatarflow-style-<preset>, trained by `avatarflow
train`) is stylised by it in one pass; other presets, and every style image, by the optimisation
path. The stage record says which path ran, with the model version, and its seconds."""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from stores.avatar_store import StageRef
from stores.location import DataLocation
from stores.model_registry import ModelIntegrityError, load_model_version, production_version, style_model_name
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.common.stage_task import run_stage
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_image, resolve_input_path
from tasks.style.config import StyleConfig
from tasks.style.presets import STYLE_PRESETS, resolve_style

_NETWORKS: dict[tuple, object] = {}
"""Style networks loaded in this worker process, by (registry, model, version, device)."""


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


def style_network(data_dir: str | None, preset: str, device: str):
    """(network, version) of the preset's promoted style network, loaded once per worker process
    and version; None when no data dir is given, the style is not a preset, or none is promoted."""
    if data_dir is None or preset not in STYLE_PRESETS:
        return None
    name = style_model_name(preset)
    current = production_version(data_dir, name)
    if current is None:
        return None
    version = int(current.version)
    key = (DataLocation(data_dir).url, name, version, device)
    if key not in _NETWORKS:
        try:
            _NETWORKS[key] = load_model_version(data_dir, name, version, device)
        except ModelIntegrityError as error:  # a tampered or damaged model file: refuse, one line
            raise AvatarInputError(str(error)) from None
    return _NETWORKS[key], version


def stylise_texture(photo_u8: np.ndarray, style_value: str, style_u8: np.ndarray, config: StyleConfig,
                    seed: int, data_dir: str | None):
    """(StyleResult, path record): the preset's promoted network when there is one, else the
    optimisation path (always for a style image)."""
    from tasks.common.torch_utils import resolve_device  # torch loads on the worker, not in the flow process
    from tasks.style.transfer import stylise, stylise_with_network

    found = style_network(data_dir, style_value, str(resolve_device(config.device)))
    if found is not None:
        network, version = found
        return (stylise_with_network(photo_u8, style_u8, network, config),
                {"path": "network", "model": style_model_name(style_value), "model_version": version,
                 "working_size": network.size})
    return (stylise(photo_u8, style_u8, config, seed=seed),
            {"path": "optimisation", "model": None, "model_version": None, "working_size": config.size})


def _names_a_preset(value: str) -> bool:
    """A bare word (no folder, no file extension) is meant as a preset name, not as an image path."""
    return not any(sep in value for sep in ("/", "\\", ".", ":"))


@task(name="style", cache_policy=NO_CACHE, persist_result=False)
def stylise_avatar(rig: StageRef, row: AvatarRow, manifest_dir: str, config: StyleConfig, ingest: IngestConfig,
                   data_dir: str | None = None):
    """`data_dir`: where the model registry is; without it every style takes the optimisation path."""
    run = rig.run

    def compute(store):
        from tasks.style.metrics import content_landmark_error  # MediaPipe loads on the worker

        name, style = style_image(row.style_name, manifest_dir, ingest)
        texture = store.read(run, row.id, rig.arrays["texture_photo"].name)
        side = texture.shape[1]
        photo = np.ascontiguousarray(texture[:side])  # rows below are the mouth-colour band
        result, path = stylise_texture(photo, row.style_name, style, config, row.seed, data_dir)
        styled = texture.copy()
        styled[:side] = result.image
        landmark_error = content_landmark_error(photo, result.image)
        if landmark_error == float("inf"):
            raise AvatarInputError(f"style {name!r} hid the face: MediaPipe finds no face on the stylised texture")
        metrics = {"style": name, **path, "stylise_seconds": round(result.seconds, 3),
                   "gram_loss_before": round(result.gram_loss_before, 6),
                   "gram_loss_after": round(result.gram_loss_after, 6),
                   "gram_loss_reduction": round(1.0 - result.gram_loss_after / max(result.gram_loss_before, 1e-12), 4),
                   "content_landmark_error": None if landmark_error is None else round(landmark_error, 4)}
        arrays = {"texture_photo": store.write(run, row.id, "texture/styled", styled, attrs=metrics)}
        return arrays, {"record": metrics}

    return run_stage("style", rig.store_url, run, row.id, compute)
