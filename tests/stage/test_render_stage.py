"""Render stage on a real portrait with a small synthetic rig: real Blender jobs (photo mode with
Workbench, lit mode with Cycles) in their own processes, then the video, frames, GLB and .blend
they wrote. The photo rig goes through the render task's two jobs: the render job (video, poster,
frames) and the export job (GLB, .blend)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from PIL import Image

from tasks.common.arkit import ARKIT_NAMES, INDEX
from tasks.render.config import RenderConfig
from tasks.render.runner import RenderError, mux_audio, probe_video, run_blender_job, write_job
from tasks.render.task import EXPORT_OUTPUTS, RENDER_OUTPUTS, outputs_for
from tests.render_rig import JAW_DROP, MOVING_SHAPES, PORTRAIT, make_animation, make_rig, make_texture

SIZE = 128
N_FRAMES = 10
POSE_FROM = 7  # 0-based: frames 1..7 keep the head still, 8..10 turn it
FPS = 25


@pytest.fixture(scope="module")
def photo_render(tmp_path_factory):
    """The render task's two photo-mode jobs on one rig, 10 frames at 128^2: the render job's
    video, poster and frames, and the export job's GLB and .blend."""
    assert PORTRAIT.is_file(), f"sample portrait missing: {PORTRAIT}"
    rig = make_rig(SIZE)
    texture = make_texture(SIZE)
    weights, head_pose = make_animation(N_FRAMES, pose_from=POSE_FROM)
    settings = RenderConfig(mode="photo", keep_frames=True)
    jobs = {}
    for part, kinds in (("render", RENDER_OUTPUTS), ("export", EXPORT_OUTPUTS)):
        job_path = write_job(tmp_path_factory.mktemp(part), **rig, texture=texture, weights=weights,
                             head_pose=head_pose, settings=settings, fps=FPS, resolution=SIZE, seed=0, poster_frame=5,
                             outputs=outputs_for(settings, kinds))
        jobs[part] = run_blender_job(job_path, timeout_s=300)
    result = {**jobs["render"], "paths": {**jobs["render"]["paths"], **jobs["export"]["paths"]}}
    frames = [Path(result["paths"]["frames_dir"]) / f"frame_{i:04d}.png" for i in range(1, N_FRAMES + 1)]
    return {"result": result, "jobs": jobs, "rig": rig, "texture": texture, "weights": weights, "frames": frames}


def test_render_and_export_jobs_split_the_outputs(photo_render):
    jobs = photo_render["jobs"]
    assert set(jobs["render"]["paths"]) == {"video", "poster", "frames_dir"}
    assert set(jobs["export"]["paths"]) == {"glb", "blend"}
    # the files that carry the scene keep an sRGB texture
    assert jobs["render"]["colour_passthrough"] is True and jobs["export"]["colour_passthrough"] is False
    assert jobs["export"]["frames"] == N_FRAMES and jobs["export"]["animation_max_error"] < 1e-4
    # a preset's switches still apply to each share
    assert outputs_for(RenderConfig(write_blend=False), EXPORT_OUTPUTS) == {
        "video": None, "glb": "avatar.glb", "blend": None, "poster": None, "frames_dir": None}
    assert outputs_for(RenderConfig(), RENDER_OUTPUTS) == {
        "video": "frames.mp4", "glb": None, "blend": None, "poster": "poster.png", "frames_dir": None}


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_photo_video_is_h264_yuv420p_with_every_frame(photo_render):
    result = photo_render["result"]
    assert result["frames"] == N_FRAMES
    info = probe_video(result["paths"]["video"])
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["n_frames"] == N_FRAMES and info["fps"] == pytest.approx(FPS)
    assert (info["width"], info["height"]) == (SIZE, SIZE)
    assert all(path.is_file() for path in photo_render["frames"])
    assert len(list(Path(result["paths"]["frames_dir"]).iterdir())) == N_FRAMES


def test_photo_frame_at_rest_is_pixel_exact(photo_render):
    photo = photo_render["texture"][:SIZE].astype(np.int16)
    first = read_png(photo_render["frames"][0])
    assert first.shape == photo.shape
    assert np.array_equal(first, photo)


def test_colour_passthrough_gives_every_byte_value_back_and_the_frames_of_srgb_in_standard_out(photo_render, tmp_path):
    # The render job passes the texture's bytes through (Non-Color texture, Raw view). A texture holding every byte
    # value in every channel comes back exactly at rest, and each moving frame equals the sRGB/Standard render's.
    values = np.arange(SIZE * SIZE * 3) % 256
    texture = photo_render["texture"].copy()
    texture[:SIZE] = np.stack([values, np.roll(values, 85), np.roll(values, 170)], axis=-1)[::3].reshape(SIZE, SIZE, 3)
    settings = RenderConfig(mode="photo", keep_frames=True)
    frames = {}
    for passthrough in (True, False):
        job_path = write_job(tmp_path / str(passthrough), **photo_render["rig"], texture=texture,
                             weights=photo_render["weights"], head_pose=make_animation(N_FRAMES, pose_from=POSE_FROM)[1],
                             settings=settings, fps=FPS, resolution=SIZE, seed=0,
                             outputs=outputs_for(settings, RENDER_OUTPUTS))
        job = json.loads(job_path.read_text())
        job_path.write_text(json.dumps({**job, "colour_passthrough": passthrough}))
        result = run_blender_job(job_path, timeout_s=300)
        assert result["colour_passthrough"] is passthrough
        frames[passthrough] = [read_png(Path(result["paths"]["frames_dir"]) / f"frame_{i:04d}.png")
                               for i in range(1, N_FRAMES + 1)]
    assert np.array_equal(frames[True][0], texture[:SIZE].astype(np.int16))
    assert len(np.unique(frames[True][0])) == 256
    for passed, converted in zip(frames[True], frames[False]):
        assert np.array_equal(passed, converted)


def decoded_frames(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]).astype(np.int16)


def test_a_face_cropped_video_is_as_close_to_the_frames_as_a_whole_frame_video(photo_render, tmp_path):
    # The render job renders only the face's box and pastes it into a whole frame of the still photo. Against the
    # job's own PNG frames, that video errs no more than one Blender renders whole, at the box's edge included.
    result = photo_render["result"]
    left, top, width, height = result["face_crop"]
    assert 0 < width * height < 0.6 * SIZE * SIZE
    truth = np.stack([read_png(path) for path in photo_render["frames"]])
    moved = np.any(truth != truth[0], axis=(0, 3))
    rows, columns = np.nonzero(moved)
    assert rows.size > 50 and columns.min() >= left and columns.max() < left + width
    assert rows.min() >= top and rows.max() < top + height
    settings = RenderConfig(mode="photo")
    job_path = write_job(tmp_path, **photo_render["rig"], texture=photo_render["texture"],
                         weights=photo_render["weights"], head_pose=make_animation(N_FRAMES, pose_from=POSE_FROM)[1],
                         settings=settings, fps=FPS, resolution=SIZE, seed=0, outputs=outputs_for(settings, ("video",)))
    job_path.write_text(json.dumps({**json.loads(job_path.read_text()), "face_crop": False}))
    whole = run_blender_job(job_path, timeout_s=300)
    assert whole["face_crop"] is None
    cropped_error = np.abs(decoded_frames(result["paths"]["video"]) - truth)
    whole_error = np.abs(decoded_frames(whole["paths"]["video"]) - truth)
    edge = np.zeros((SIZE, SIZE), bool)
    edge[top - 2:top + height + 2, left - 2:left + width + 2] = True
    edge[top + 2:top + height - 2, left + 2:left + width - 2] = False
    assert cropped_error.mean() < whole_error.mean() + 0.5, (cropped_error.mean(), whole_error.mean())
    assert cropped_error[:, edge].mean() < whole_error[:, edge].mean() + 0.5
    assert np.abs((decoded_frames(result["paths"]["video"]) - truth).mean()) < 2.0  # no colour shift
    info = probe_video(result["paths"]["video"])
    assert (info["codec"], info["pix_fmt"], info["n_frames"]) == ("h264", "yuv420p", N_FRAMES)


def test_poster_is_the_requested_frame(photo_render):
    paths = photo_render["result"]["paths"]
    assert np.array_equal(read_png(paths["poster"]), read_png(photo_render["frames"][4]))


def test_jaw_frame_differs_inside_the_mesh_area_only(photo_render):
    photo = photo_render["texture"][:SIZE].astype(np.int16)
    frame_index = POSE_FROM - 1  # jaw open, head still
    assert photo_render["weights"][frame_index, INDEX["jawOpen"]] > 0.5
    frame = read_png(photo_render["frames"][frame_index])
    changed = np.any(frame != photo, axis=2)
    assert changed.sum() > 50
    vertices = photo_render["rig"]["vertices"]
    # the mesh's pixel box at rest, grown by the largest shape offset and one pixel
    reach = JAW_DROP * SIZE + 1
    x0 = (vertices[:, 0].min() + 0.5) * SIZE - reach
    x1 = (vertices[:, 0].max() + 0.5) * SIZE + reach
    y0 = (0.5 - vertices[:, 1].max()) * SIZE - reach
    y1 = (0.5 - vertices[:, 1].min()) * SIZE + reach
    rows, cols = np.nonzero(changed)
    assert rows.min() >= y0 and rows.max() <= y1 and cols.min() >= x0 and cols.max() <= x1


def test_head_turn_moves_the_face(photo_render):
    frames = photo_render["frames"]
    # the last two frames have nearly the same weights but different head pose
    assert np.any(read_png(frames[-1]) != read_png(frames[-2]))
    assert photo_render["result"]["animation_max_error"] < 1e-4


COMPONENT_DTYPES = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}


def accessor_array(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    """Decode a float VEC3 accessor of a GLB, dense or sparse, as (count, 3)."""
    accessor = gltf.accessors[index]
    blob = gltf.binary_blob()

    def view_bytes(view_index: int, offset: int) -> bytes:
        view = gltf.bufferViews[view_index]
        start = (view.byteOffset or 0) + (offset or 0)
        return blob[start:start + view.byteLength - (offset or 0)]

    values = np.zeros((accessor.count, 3), np.float32)
    if accessor.bufferView is not None:
        dense = np.frombuffer(view_bytes(accessor.bufferView, accessor.byteOffset), np.float32)
        values[:] = dense[:accessor.count * 3].reshape(-1, 3)
    if accessor.sparse is not None:
        sparse = accessor.sparse
        rows = np.frombuffer(view_bytes(sparse.indices.bufferView, sparse.indices.byteOffset),
                             COMPONENT_DTYPES[sparse.indices.componentType])[:sparse.count]
        moved = np.frombuffer(view_bytes(sparse.values.bufferView, sparse.values.byteOffset), np.float32)
        values[rows] = moved[:sparse.count * 3].reshape(-1, 3)
    return values


def test_glb_has_the_textured_mesh_morph_targets_and_animation(photo_render):
    gltf = pygltflib.GLTF2().load(photo_render["result"]["paths"]["glb"])
    assert len(gltf.meshes) == 1
    mesh = gltf.meshes[0]
    assert mesh.extras["targetNames"] == list(ARKIT_NAMES)
    primitive = mesh.primitives[0]
    assert len(primitive.targets) == len(ARKIT_NAMES)
    assert primitive.attributes.TEXCOORD_0 is not None

    def moves(target) -> bool:
        accessor = gltf.accessors[target["POSITION"]]
        return max(abs(v) for v in accessor.max + accessor.min) > 1e-6

    moving = {name for name, target in zip(ARKIT_NAMES, primitive.targets) if moves(target)}
    assert moving == set(MOVING_SHAPES)
    # the exported jawOpen offsets are the rig's, vertex for vertex (the rig is already y-up)
    rig = photo_render["rig"]
    base = accessor_array(gltf, primitive.attributes.POSITION)
    distance = np.linalg.norm(base[:, None, :] - rig["vertices"][None, :, :], axis=2)
    rig_index = distance.argmin(axis=1)
    assert distance.min(axis=1).max() < 1e-5
    jaw = accessor_array(gltf, primitive.targets[INDEX["jawOpen"]]["POSITION"])
    np.testing.assert_allclose(jaw, rig["deltas"][INDEX["jawOpen"]][rig_index], atol=1e-6)
    assert len(gltf.images) == 1 and gltf.materials[0].pbrMetallicRoughness.baseColorTexture is not None
    assert len(gltf.animations) == 1
    paths = {channel.target.path for channel in gltf.animations[0].channels}
    assert {"weights", "rotation", "translation"} <= paths
    times = gltf.accessors[gltf.animations[0].samplers[0].input]
    assert times.count == N_FRAMES and times.min == [0.0]
    assert times.max[0] == pytest.approx((N_FRAMES - 1) / FPS)


BLEND_CHECK = """
import json, sys, bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1], load_ui=False)
face = bpy.data.objects["avatar_face"]
image = bpy.data.images["avatar_texture"]
bpy.context.scene.frame_set(6)
print(json.dumps({
    "shape_keys": [block.name for block in face.data.shape_keys.key_blocks],
    "packed": image.packed_file is not None,
    "jaw_at_6": face.data.shape_keys.key_blocks["jawOpen"].value,
    "frames": [bpy.context.scene.frame_start, bpy.context.scene.frame_end],
    "parent": face.parent.name,
}))
"""


def test_blend_file_is_self_contained_and_animated(photo_render):
    blend = photo_render["result"]["paths"]["blend"]
    # zstd-compressed (Blender >= 3.0) or plain "BLEN"
    assert open(blend, "rb").read(4) in (b"\x28\xb5\x2f\xfd", b"BLEN")
    completed = subprocess.run([sys.executable, "-c", BLEND_CHECK, blend], capture_output=True, text=True,
                               check=True, timeout=120)
    info = json.loads(completed.stdout.strip().splitlines()[-1])
    assert info["shape_keys"] == ["Basis", *ARKIT_NAMES]
    assert info["packed"] is True
    assert info["jaw_at_6"] == pytest.approx(float(photo_render["weights"][5, INDEX["jawOpen"]]), abs=1e-6)
    assert info["frames"] == [1, N_FRAMES] and info["parent"] == "avatar_head"


CURVE_CHECK = """
import json, sys
import bpy, numpy as np
sys.path.insert(0, sys.argv[2])
from tasks.render.blender_job import key_fcurve, new_channelbag
values = np.array(json.loads(sys.argv[1]), dtype=np.float32)
probe = bpy.data.objects.new("probe", None)
channelbag = new_channelbag(bpy, probe, "OBJECT", "probe")
key_fcurve(channelbag, "location", 0, values, "probe", every_frame=False)
curve = channelbag.fcurves[0]
print(json.dumps({"keys": len(curve.keyframe_points), "values": [curve.evaluate(f + 1) for f in range(len(values))]}))
"""


def test_a_render_jobs_sparse_keys_give_every_frames_value_exactly():
    rng = np.random.default_rng(5)
    values = np.concatenate([np.zeros(40), np.linspace(0, 1, 7), np.full(30, 0.25), rng.random(10), np.zeros(20)])
    completed = subprocess.run([sys.executable, "-c", CURVE_CHECK, json.dumps(values.tolist()),
                                str(Path(__file__).resolve().parents[2])],
                               capture_output=True, text=True, check=True, timeout=120)
    curve = json.loads(completed.stdout.strip().splitlines()[-1])
    assert curve["keys"] < len(values) // 2
    np.testing.assert_array_equal(np.float32(curve["values"]), values.astype(np.float32))


def test_mux_audio_into_the_rendered_video(photo_render, tmp_path):
    rate = 16000
    audio = 0.2 * np.sin(np.linspace(0, 200, int(0.5 * rate))).astype(np.float32)
    talk = mux_audio(photo_render["result"]["paths"]["video"], audio, rate, tmp_path / "talk.mp4")
    info = probe_video(talk)
    assert info["n_frames"] == N_FRAMES and info["pix_fmt"] == "yuv420p" and info["audio_codec"] == "aac"
    assert abs(info["duration"] - N_FRAMES / FPS) <= 1 / FPS


def test_lit_mode_renders_with_cycles(tmp_path):
    size, n_frames = 64, 2
    rig = make_rig(size, grid=9)
    weights, head_pose = make_animation(n_frames)
    settings = RenderConfig(mode="lit", cycles_samples=1, cycles_device="cpu", write_glb=False, write_blend=False)
    job_path = write_job(tmp_path, **rig, texture=make_texture(size), weights=weights, head_pose=head_pose,
                         settings=settings, fps=FPS, resolution=size, seed=3, poster_frame=1)
    result = run_blender_job(job_path, timeout_s=300)
    assert set(result["paths"]) == {"video", "poster"}
    info = probe_video(result["paths"]["video"])
    assert info["n_frames"] == n_frames and info["pix_fmt"] == "yuv420p"
    poster = read_png(result["paths"]["poster"])
    assert poster.shape == (size, size, 3)
    # the lit face sits in the middle, on the flat grey world
    corner, centre = poster[:4, :4].reshape(-1, 3), poster[28:36, 28:36].reshape(-1, 3)
    assert np.ptp(corner, axis=0).max() <= 2
    assert np.abs(centre.mean(axis=0) - corner.mean(axis=0)).max() > 20


def test_gpu_request_uses_a_gpu_or_fails_clearly(tmp_path):
    size = 32
    rig = make_rig(size, grid=5)
    weights, head_pose = make_animation(1)
    settings = RenderConfig(mode="lit", cycles_samples=1, cycles_device="gpu", write_glb=False, write_blend=False)
    job_path = write_job(tmp_path, **rig, texture=make_texture(size), weights=weights, head_pose=head_pose,
                         settings=settings, fps=FPS, resolution=size, seed=0)
    try:
        result = run_blender_job(job_path, timeout_s=300)
    except RenderError as failure:
        assert "no OptiX or CUDA device" in str(failure)
    else:
        assert "Cycles uses" in (tmp_path / "blender.log").read_text()
        assert probe_video(result["paths"]["video"])["n_frames"] == 1
