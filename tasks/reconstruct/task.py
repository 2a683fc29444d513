"""Reconstruct task: portrait → face rig (mesh, UVs, textures, blendshapes) in the avatar store."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stores.avatar_store import StageRef
from tasks.common.arkit import ARKIT_NAMES
from tasks.common.rows import AvatarRow
from tasks.common.stage_task import run_stage
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.rig import reconstruct


@task(name="reconstruct", cache_policy=NO_CACHE, persist_result=False)
def reconstruct_avatar(face: StageRef, row: AvatarRow, config: ReconstructConfig):
    """`face` is the stage that wrote the portrait: ingest, or generate / refine."""
    run = face.run

    def compute(store):
        image = store.read(run, row.id, face.arrays["portrait"].name)
        rig = reconstruct(image, row.resolution, config)
        write = lambda name, array, **kw: store.write(run, row.id, name, array, **kw)  # noqa: E731
        arrays = {
            "vertices": write("mesh/vertices", rig.vertices,
                              attrs={"crop_box": [int(v) for v in rig.crop_box], "units": "crop heights"}),
            "faces": write("mesh/faces", rig.faces),
            "uv": write("mesh/uv", rig.uv_photo, attrs={"layout": "photo projection into texture/photo"}),
            "uv_canonical": write("mesh/uv_canonical", rig.uv_canonical),
            "pivot": write("mesh/pivot", rig.pivot),
            "landmarks": write("mesh/landmarks", rig.landmarks_px, attrs={"units": "crop pixels"}),
            "rest_offset": write("mesh/rest_offset", rig.rest_offset,
                                 attrs={"units": "crop heights", "meaning": "photo landmarks -> rest pose "
                                        "(an open-mouth photo's lips closed)"}),
            "texture_photo": write("texture/photo", rig.texture, attrs={"layout": "crop photo above the mouth band"}),
            "albedo": write("texture/albedo", rig.canonical_texture, attrs={"layout": "canonical UV"}),
            "deltas": write("blendshapes/deltas", rig.deltas, attrs={"names": list(ARKIT_NAMES)}),
        }
        warnings = []
        if rig.n_faces_found > 1:
            warnings.append(f"{rig.n_faces_found} faces found in the portrait; using the largest")
        return arrays, {"warnings": warnings, "n_faces": rig.n_faces_found}

    return run_stage("reconstruct", face.store_url, run, row.id, compute)
