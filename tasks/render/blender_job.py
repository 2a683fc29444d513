"""One render job inside Blender (bpy): rig + animation -> video, poster, frames, GLB, .blend.

Run it in its own process, either for one job or for many jobs in turn:

    python tasks/render/blender_job.py --job JOB.json
    python tasks/render/blender_job.py --serve --fd-in R --fd-out W

It imports only the standard library, numpy and bpy (and PyAV for a face-cropped video), so it runs
as a plain file path. The job file names every input and output path (see `JOB_FIELDS`). The job
writes `out_dir/blender.log` and `out_dir/result.json` ({"paths", "frames", "seconds",
"blender_version", "animation_max_error", "colour_passthrough", "face_crop"}).
With --job it prints the result path and exits 0; on failure it logs the traceback, prints one
line to stderr and exits 1.

With --serve the protocol runs on two inherited pipe fds, never on stdout/stderr (Blender's C code
prints there; those fds go to each job's blender.log while it runs, else to /dev/null). Messages
are JSON lines. The process says {"ready": ...} once its scene is empty, reads {"job": PATH},
answers {"ok": true, "result": {...}} or {"ok": false, "error": "one line"}, then empties the scene
(factory settings, orphan data purged) and says ready again. It exits at end of input.

Photo mode is pixel-exact to the texture's photo rows when `resolution` equals the texture
width S (then every pixel centre samples one texel centre); other sizes resample to nearest.
A photo-mode video (job field "face_crop", default true; not in a job that writes a GLB or .blend)
renders only the box that holds the face in every frame, at the box's own size, and pastes each
frame into one whole frame of the still photo: outside that box nothing moves.

The scene is built once per job. Shape-key values and the head pose are keyed frame by frame
(LINEAR), written through `keyframe_points.foreach_set`. A render-only job leaves out the keys
inside runs of equal values; a job that exports the GLB or .blend keys every frame. Blender 5.0 actions are
layered: F-curves live in a channelbag of a keyframe strip, bound to a slot of the animated ID.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

LOG = logging.getLogger("avatarflow.blender_job")

# field -> accepted types; "outputs" entries are file names relative to out_dir, or null
JOB_FIELDS: dict[str, tuple[type, ...]] = {
    "rig_npz": (str,),
    "texture_png": (str,),
    "shape_key_names": (list,),
    "fps": (int,),
    "resolution": (int,),
    "mode": (str,),
    "cycles_samples": (int,),
    "cycles_device": (str,),
    "seed": (int,),
    "out_dir": (str,),
    "outputs": (dict,),
    "poster_frame": (int,),
}
OUTPUT_KEYS = ("video", "glb", "blend", "poster", "frames_dir")
OPTIONAL_JOB_FIELDS: dict[str, object] = {"video_quality": "HIGH", "video_gop_size": 25, "colour_passthrough": True,
                                           "face_crop": True}
# Blender's ffmpeg.constant_rate_factor names, and the x264 CRF Blender gives each
VIDEO_QUALITIES = ("LOSSLESS", "PERC_LOSSLESS", "HIGH", "MEDIUM", "LOW", "VERYLOW", "LOWEST")
VIDEO_CRF = {"LOSSLESS": 0, "PERC_LOSSLESS": 17, "HIGH": 20, "MEDIUM": 23, "LOW": 26, "VERYLOW": 29, "LOWEST": 32}
X264_PRESET = "superfast"  # what Blender's REALTIME preset gives x264
# face crop: pixels kept around the face's extent over the clip; above this share of the frame a crop saves too
# little to pay for decoding and encoding the frame once more
FACE_CROP_MARGIN_PX = 8
FACE_VIDEO_QUALITY = "PERC_LOSSLESS"  # CRF 17, in yuv420p like every lossy quality
FACE_CROP_MAX_SHARE = 0.6
FACE_CROP_CHUNK_FRAMES = 256
RIG_KEYS = ("vertices", "faces", "uv_photo", "uv_canonical", "deltas", "weights", "head_pose", "pivot")

FACE_OBJECT = "avatar_face"
HEAD_OBJECT = "avatar_head"
BACKGROUND_OBJECT = "photo_background"
BACKGROUND_Z = -2.0
PHOTO_CAMERA_Z = 5.0
# lit mode: camera lens, its direction from the face (right, up, front), room around the face
LIT_LENS_MM = 85.0
LIT_VIEW_DIRECTION = (0.3, 0.1, 1.0)
LIT_FRAME_MARGIN = 1.35
# the evaluated mesh must follow the keyed weights and pose this closely (world units = crop widths)
ANIMATION_TOLERANCE = 1e-4


class JobError(Exception):
    """The job file or its inputs cannot be rendered; the message says why."""


# ---------------------------------------------------------------------------------------------
# job and rig files


def load_job(job_path: Path) -> dict:
    """Read and check the job JSON; relative paths are taken relative to the job file."""
    try:
        job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read job file {job_path}: {exc}") from exc
    if not isinstance(job, dict):
        raise JobError(f"job file {job_path} must hold a JSON object")
    missing = [key for key in JOB_FIELDS if key not in job]
    if missing:
        raise JobError(f"job file {job_path} lacks {missing}")
    for key, types in JOB_FIELDS.items():
        if not isinstance(job[key], types) or isinstance(job[key], bool):
            raise JobError(f"job field {key!r} has type {type(job[key]).__name__}")
    for key, default in OPTIONAL_JOB_FIELDS.items():
        job.setdefault(key, default)
    if job["mode"] not in ("photo", "lit"):
        raise JobError(f"job mode must be 'photo' or 'lit', got {job['mode']!r}")
    if job["cycles_device"] not in ("auto", "cpu", "gpu"):
        raise JobError(f"cycles_device must be auto, cpu or gpu, got {job['cycles_device']!r}")
    if job["video_quality"] not in VIDEO_QUALITIES:
        raise JobError(f"video_quality must be one of {VIDEO_QUALITIES}, got {job['video_quality']!r}")
    if not isinstance(job["video_gop_size"], int) or job["video_gop_size"] < 1:
        raise JobError(f"video_gop_size must be an integer >= 1, got {job['video_gop_size']!r}")
    for key in ("colour_passthrough", "face_crop"):
        if not isinstance(job[key], bool):
            raise JobError(f"{key} must be true or false, got {job[key]!r}")
    if job["seed"] < 0:
        raise JobError(f"seed must be >= 0, got {job['seed']}")
    if job["fps"] < 1 or job["cycles_samples"] < 1:
        raise JobError("fps and cycles_samples must be >= 1")
    # H.264 yuv420p needs even frame sizes
    if job["resolution"] < 2 or job["resolution"] % 2:
        raise JobError(f"resolution must be an even number >= 2, got {job['resolution']}")
    unknown = set(job["outputs"]) - set(OUTPUT_KEYS)
    if unknown:
        raise JobError(f"unknown outputs {sorted(unknown)}; known: {OUTPUT_KEYS}")
    outputs = {key: job["outputs"].get(key) for key in OUTPUT_KEYS}
    for key, name in outputs.items():
        if name is not None and (not isinstance(name, str) or not name or Path(name).is_absolute()
                                 or ".." in Path(name).parts):
            raise JobError(f"output {key!r} must be a file name inside out_dir, got {name!r}")
    job["outputs"] = outputs
    base = Path(job_path).resolve().parent
    for key in ("rig_npz", "texture_png", "out_dir"):
        job[key] = str((base / job[key]).resolve())
    return job


def load_rig(npz_path: str, shape_key_names: list) -> dict[str, np.ndarray]:
    """Load the rig and animation arrays (no pickles) and check that their shapes agree."""
    with np.load(npz_path, allow_pickle=False) as data:
        missing = [key for key in RIG_KEYS if key not in data.files]
        if missing:
            raise JobError(f"rig file {npz_path} lacks arrays {missing}")
        rig = {key: np.asarray(data[key]) for key in RIG_KEYS}
    n_vertices = rig["vertices"].shape[0]
    n_shapes = len(shape_key_names)
    expected = {
        "vertices": (n_vertices, 3),
        "uv_photo": (n_vertices, 2),
        "uv_canonical": (n_vertices, 2),
        "deltas": (n_shapes, n_vertices, 3),
        "pivot": (3,),
    }
    for key, shape in expected.items():
        if rig[key].shape != shape:
            raise JobError(f"rig array {key} has shape {rig[key].shape}, expected {shape}")
    n_frames = rig["weights"].shape[0]
    if rig["weights"].shape != (n_frames, n_shapes) or n_frames < 1:
        raise JobError(f"weights have shape {rig['weights'].shape}, expected (T>=1, {n_shapes})")
    if rig["head_pose"].shape != (n_frames, 6):
        raise JobError(f"head_pose has shape {rig['head_pose'].shape}, expected ({n_frames}, 6)")
    faces = rig["faces"]
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] < 1:
        raise JobError(f"faces have shape {faces.shape}, expected (F>=1, 3)")
    if faces.min() < 0 or faces.max() >= n_vertices:
        raise JobError("faces index vertices that do not exist")
    for key in RIG_KEYS:
        if key != "faces" and not np.all(np.isfinite(rig[key])):
            raise JobError(f"rig array {key} holds NaN or infinite values")
    if len(set(shape_key_names)) != n_shapes or not all(isinstance(n, str) and n for n in shape_key_names):
        raise JobError("shape_key_names must be distinct non-empty strings")
    return rig


def euler_xyz_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Rotation matrix of Blender's XYZ Euler: X first, then Y, then Z (R = Rz Ry Rx)."""
    cx, sx = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    cz, sz = math.cos(roll), math.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def face_box(rig: dict[str, np.ndarray], resolution: int) -> tuple[int, int, int, int] | None:
    """The pixel box (left, top, width, height) of the photo camera's frame that holds every face vertex in every
    frame, with FACE_CROP_MARGIN_PX around it, on even pixels (H.264's yuv420p halves the chroma). Outside it a
    photo-mode frame is the still photo. None when the box would cover more than FACE_CROP_MAX_SHARE of the frame."""
    lowest, highest = np.full(2, np.inf), np.full(2, -np.inf)
    for start in range(0, rig["weights"].shape[0], FACE_CROP_CHUNK_FRAMES):  # a long clip is never held whole
        world = expected_world_vertices_of(rig, start, start + FACE_CROP_CHUNK_FRAMES)
        lowest = np.minimum(lowest, world[..., :2].min(axis=(0, 1)))
        highest = np.maximum(highest, world[..., :2].max(axis=(0, 1)))
    # the photo camera maps x in [-0.5, 0.5] to columns 0..R and y in [0.5, -0.5] to rows 0..R
    left = math.floor((lowest[0] + 0.5) * resolution) - FACE_CROP_MARGIN_PX
    right = math.ceil((highest[0] + 0.5) * resolution) + FACE_CROP_MARGIN_PX
    top = math.floor((0.5 - highest[1]) * resolution) - FACE_CROP_MARGIN_PX
    bottom = math.ceil((0.5 - lowest[1]) * resolution) + FACE_CROP_MARGIN_PX
    left, top = max(0, left - left % 2), max(0, top - top % 2)
    right, bottom = min(resolution, right + right % 2), min(resolution, bottom + bottom % 2)
    if right - left < 2 or bottom - top < 2:
        return None
    if (right - left) * (bottom - top) > FACE_CROP_MAX_SHARE * resolution * resolution:
        return None
    return left, top, right - left, bottom - top


def expected_world_vertices_of(rig: dict[str, np.ndarray], start: int, stop: int) -> np.ndarray:
    """(C, V, 3): where the rig's vertices must be in 0-based frames start..stop-1: blended shapes, then head pose
    (rotated about the pivot, then moved)."""
    weights = rig["weights"][start:stop].astype(np.float64)
    poses = rig["head_pose"][start:stop].astype(np.float64)
    pivot = rig["pivot"].astype(np.float64)
    shaped = rig["vertices"].astype(np.float64) + np.tensordot(weights, rig["deltas"].astype(np.float64), axes=1)
    rotations = np.stack([euler_xyz_matrix(*pose[:3]) for pose in poses])  # (C, 3, 3)
    return np.einsum("cvj,cij->cvi", shaped - pivot, rotations) + pivot + poses[:, None, 3:]


def expected_world_vertices(rig: dict[str, np.ndarray], frame_index: int) -> np.ndarray:
    """Where the rig's vertices must be at a 0-based frame (see expected_world_vertices_of)."""
    return expected_world_vertices_of(rig, frame_index, frame_index + 1)[0]


# ---------------------------------------------------------------------------------------------
# scene building


def reset_blender(bpy) -> None:
    """Empty factory scene, no auto-run scripts (a .blend's Python never runs here)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False


def load_texture(bpy, texture_png: str, colorspace: str = "sRGB"):
    """Load the rig texture (photo rows on top, mouth band below), sRGB unless told otherwise."""
    image = bpy.data.images.load(texture_png, check_existing=False)
    image.name = "avatar_texture"
    image.colorspace_settings.name = colorspace
    width, height = image.size
    if width < 1 or height <= width:
        raise JobError(f"texture is {width}x{height}; it needs photo rows plus a band below (height > width)")
    return image


def make_material(bpy, image, mode: str):
    """One material: image texture -> Principled base colour. Workbench TEXTURE mode reads the
    image node directly; Cycles and the glTF exporter read the Principled BSDF."""
    material = bpy.data.materials.new("avatar_material")
    # 5.0 creates materials and worlds with node trees (Principled BSDF, Background)
    nodes = material.node_tree.nodes
    links = material.node_tree.links
    bsdf = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = 0.5
    uv_node = nodes.new("ShaderNodeUVMap")
    uv_node.uv_map = "photo"
    texture_node = nodes.new("ShaderNodeTexImage")
    texture_node.image = image
    # Closest keeps the photo pixel-exact under the orthographic camera
    texture_node.interpolation = "Closest" if mode == "photo" else "Linear"
    texture_node.extension = "EXTEND"
    links.new(uv_node.outputs["UV"], texture_node.inputs["Vector"])
    links.new(texture_node.outputs["Color"], bsdf.inputs["Base Color"])
    nodes.active = texture_node
    return material, texture_node


def set_uv_layer(mesh, name: str, face_corner_uv: np.ndarray):
    """Add a UV layer from per-corner UVs (F*3, 2)."""
    layer = mesh.uv_layers.new(name=name)
    layer.uv.foreach_set("vector", np.ascontiguousarray(face_corner_uv, dtype=np.float32).ravel())
    return layer


def build_mesh(bpy, name: str, vertices: np.ndarray, faces: np.ndarray):
    """Triangle mesh from arrays, filled with foreach_set."""
    n_vertices, n_faces = len(vertices), len(faces)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(n_vertices)
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(3 * n_faces)
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, dtype=np.int32).ravel())
    mesh.polygons.add(n_faces)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * n_faces, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    if mesh.validate(verbose=False):
        raise JobError(f"mesh {name} had invalid geometry (degenerate or duplicate faces)")
    if len(mesh.polygons) != n_faces:
        raise JobError(f"mesh {name}: {n_faces} faces given, {len(mesh.polygons)} valid")
    return mesh


def build_face(bpy, rig: dict, shape_key_names: list, material):
    """The face mesh object: UV layers "photo" (rendered) and "canonical", Basis + one relative
    shape key per name."""
    mesh = build_mesh(bpy, FACE_OBJECT, rig["vertices"], rig["faces"])
    corners = rig["faces"].ravel()
    photo = set_uv_layer(mesh, "photo", rig["uv_photo"][corners])
    set_uv_layer(mesh, "canonical", rig["uv_canonical"][corners])
    mesh.uv_layers.active = photo
    photo.active_render = True
    mesh.materials.append(material)
    mesh.shade_smooth()
    face = bpy.data.objects.new(FACE_OBJECT, mesh)
    bpy.context.scene.collection.objects.link(face)
    face.shape_key_add(name="Basis", from_mix=False)
    base = rig["vertices"].astype(np.float32)
    for name, delta in zip(shape_key_names, rig["deltas"]):
        block = face.shape_key_add(name=name, from_mix=False)
        block.slider_min, block.slider_max = 0.0, 1.0
        block.points.foreach_set("co", (base + delta.astype(np.float32)).ravel())
    mesh.shape_keys.use_relative = True
    return face


def build_background(bpy, texture_size: tuple[int, int], material):
    """The photo as a plane at z=-2 spanning [-0.5, 0.5]^2, UV into the photo rows of the texture."""
    width, height = texture_size
    v_bottom = (height - width) / height  # band height B over texture height S+B
    vertices = np.array([[-0.5, -0.5, BACKGROUND_Z], [0.5, -0.5, BACKGROUND_Z],
                         [0.5, 0.5, BACKGROUND_Z], [-0.5, 0.5, BACKGROUND_Z]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)
    uv = np.array([[0.0, v_bottom], [1.0, v_bottom], [1.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    mesh = build_mesh(bpy, BACKGROUND_OBJECT, vertices, faces)
    set_uv_layer(mesh, "photo", uv[faces.ravel()]).active_render = True
    mesh.materials.append(material)
    plane = bpy.data.objects.new(BACKGROUND_OBJECT, mesh)
    bpy.context.scene.collection.objects.link(plane)
    return plane


def build_head(bpy, face, pivot: np.ndarray):
    """An Empty at the pivot that carries the head pose; the face is its child, unmoved at rest."""
    head = bpy.data.objects.new(HEAD_OBJECT, None)
    head.empty_display_type = "SPHERE"
    head.empty_display_size = 0.05
    head.rotation_mode = "XYZ"
    head.location = tuple(float(x) for x in pivot)
    bpy.context.scene.collection.objects.link(head)
    bpy.context.view_layer.update()
    face.parent = head
    face.matrix_parent_inverse = head.matrix_world.inverted()
    return head


def new_channelbag(bpy, animated_id, id_type: str, name: str):
    """A layered action with one keyframe strip and one slot, assigned to `animated_id`;
    returns the channelbag that holds the slot's F-curves."""
    action = bpy.data.actions.new(name)
    slot = action.slots.new(id_type=id_type, name=animated_id.name)
    strip = action.layers.new("animation").strips.new(type="KEYFRAME")
    channelbag = strip.channelbag(slot, ensure=True)
    animation = animated_id.animation_data_create()
    animation.action = action
    animation.action_slot = slot
    return channelbag


def keyed_frames(values: np.ndarray) -> np.ndarray:
    """Indices of the frames that need a key: the first, the last, and every frame whose value differs
    from a neighbour's. A frame inside a run of equal values is dropped: linear interpolation between two
    equal keys gives that value exactly, so the curve is unchanged at every frame. Most shape keys rest at
    0 for most of a clip, so a long clip keeps about a quarter of its keys, and Blender's memory with it."""
    values = np.asarray(values, dtype=np.float32)  # Blender stores keys as float32: compare what it keeps
    keep = np.ones(len(values), dtype=bool)
    keep[1:-1] = (values[1:-1] != values[:-2]) | (values[1:-1] != values[2:])
    return np.flatnonzero(keep)


def key_fcurve(channelbag, data_path: str, index: int, values: np.ndarray, group: str, every_frame: bool) -> None:
    """Keys on frames 1..T with LINEAR interpolation, set in bulk: all of them, or keyed_frames."""
    curve = channelbag.fcurves.new(data_path, index=index, group_name=group)
    values = np.asarray(values, dtype=np.float32)  # what Blender keeps; keyed_frames compares these
    frames = np.arange(len(values)) if every_frame else keyed_frames(values)
    co = np.empty((len(frames), 2), dtype=np.float32)
    co[:, 0] = frames + 1
    co[:, 1] = values[frames]
    points = curve.keyframe_points
    points.add(len(frames))
    points.foreach_set("co", co.ravel())
    interpolation = points[0].bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    points.foreach_set("interpolation", np.full(len(frames), interpolation, dtype=np.int32))
    curve.update()


def animate(bpy, face, head, rig: dict, shape_key_names: list, every_frame: bool) -> None:
    """Key the shape-key weights on the mesh's Key and the head pose on the Empty. `every_frame`: a key on
    every frame, as the exported GLB and .blend carry them; else only the keys a render needs."""
    key = face.data.shape_keys
    shapes = new_channelbag(bpy, key, "KEY", "avatar_shape_keys")
    for k, name in enumerate(shape_key_names):
        key_fcurve(shapes, f'key_blocks["{name}"].value', 0, rig["weights"][:, k], "shape_keys", every_frame)
    pose = new_channelbag(bpy, head, "OBJECT", "avatar_head_pose")
    for axis in range(3):
        key_fcurve(pose, "rotation_euler", axis, rig["head_pose"][:, axis], "head", every_frame)
        key_fcurve(pose, "location", axis, rig["pivot"][axis] + rig["head_pose"][:, 3 + axis], "head", every_frame)


def evaluated_world_vertices(bpy, obj) -> np.ndarray:
    """(V, 3) float64 world positions of an object's vertices as the depsgraph evaluates them now
    (shape keys and parents applied)."""
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        matrix = np.array(evaluated.matrix_world, dtype=np.float64)
    finally:
        evaluated.to_mesh_clear()
    return co.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]


def check_animation(bpy, face, rig: dict) -> float:
    """Evaluate the frame with the most motion and compare the evaluated mesh with numpy's
    blend + pose; returns the max vertex error (world units)."""
    motion = np.abs(rig["weights"]).sum(axis=1) + np.abs(rig["head_pose"]).sum(axis=1)
    frame_index = int(np.argmax(motion))
    scene = bpy.context.scene
    scene.frame_set(frame_index + 1)
    world = evaluated_world_vertices(bpy, face)
    error = float(np.abs(world - expected_world_vertices(rig, frame_index)).max())
    LOG.info("animation check at frame %d: max vertex error %.2e", frame_index + 1, error)
    if error > ANIMATION_TOLERANCE:
        raise JobError(f"evaluated mesh at frame {frame_index + 1} is {error:.3g} away from the keyed animation")
    scene.frame_set(1)
    return error


def look_at(obj, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> None:
    """Point an object's -Z axis (cameras, lights) at a target with its +Y toward world +Y
    (the rig is y-up; mathutils' to_track_quat would keep world Z up)."""
    from mathutils import Matrix

    forward = np.asarray(target, dtype=np.float64) - np.asarray(obj.location, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    camera_up = np.cross(right, forward)
    rotation = np.stack([right, camera_up, -forward], axis=1)  # columns: local X, Y, Z in world
    obj.rotation_mode = "XYZ"
    obj.rotation_euler = Matrix(rotation.tolist()).to_euler("XYZ")


def add_camera(bpy, name: str):
    """A camera object linked to the scene and made the scene camera."""
    camera = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    bpy.context.scene.collection.objects.link(camera)
    bpy.context.scene.camera = camera
    return camera


def setup_photo_mode(bpy, scene, texture_size, material) -> None:
    """Orthographic camera framing the photo exactly; Workbench, flat texture colour, no AA."""
    build_background(bpy, texture_size, material)
    camera = add_camera(bpy, "photo_camera")
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 1.0
    camera.data.clip_start = 0.1
    camera.data.clip_end = 100.0
    camera.data.sensor_fit = "AUTO"
    camera.location = (0.0, 0.0, PHOTO_CAMERA_Z)
    camera.rotation_euler = (0.0, 0.0, 0.0)  # looks down -Z
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.render_aa = "OFF"
    shading = scene.display.shading
    shading.light = "FLAT"
    shading.color_type = "TEXTURE"
    shading.show_specular_highlight = False
    shading.show_shadows = False
    shading.show_cavity = False
    shading.show_object_outline = False
    shading.show_xray = False
    shading.use_dof = False
    shading.show_backface_culling = False


def choose_cycles_device(bpy, requested: str) -> str:
    """Enable OptiX or CUDA devices when asked and present; returns "GPU" or "CPU"."""
    if requested == "cpu":
        return "CPU"
    preferences = bpy.context.preferences.addons["cycles"].preferences
    for backend in ("OPTIX", "CUDA"):
        try:
            preferences.compute_device_type = backend
        except TypeError:  # backend not compiled into this build
            continue
        preferences.refresh_devices()
        gpus = [d for d in preferences.get_devices_for_type(backend) if d.type == backend]
        if gpus:
            for device in preferences.devices:
                device.use = device.type == backend
            LOG.info("Cycles uses %s: %s", backend, ", ".join(d.name for d in gpus))
            return "GPU"
    preferences.compute_device_type = "NONE"
    if requested == "gpu":
        raise JobError("cycles_device 'gpu' was asked for, but Cycles finds no OptiX or CUDA device")
    LOG.info("Cycles finds no GPU; rendering on the CPU")
    return "CPU"


def setup_lit_mode(bpy, scene, job: dict, vertices: np.ndarray) -> None:
    """Cycles with a perspective camera a little right of and above the face, framing its
    bounding box; key/fill/rim area lights around it; a neutral grey world."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    target = (low + high) / 2.0
    radius = float(max(high[0] - low[0], high[1] - low[1])) / 2.0 * LIT_FRAME_MARGIN
    camera = add_camera(bpy, "lit_camera")
    camera.data.type = "PERSP"
    camera.data.lens = LIT_LENS_MM
    camera.data.sensor_width = 36.0
    camera.data.sensor_fit = "HORIZONTAL"
    distance = radius * LIT_LENS_MM / (camera.data.sensor_width / 2.0)
    direction = np.array(LIT_VIEW_DIRECTION) / np.linalg.norm(LIT_VIEW_DIRECTION)
    camera.location = tuple(target + distance * direction)
    camera.data.clip_start = distance / 100.0
    camera.data.clip_end = distance * 100.0
    look_at(camera, target)
    lights = (
        # name, offset from the face in units of the camera distance, power (W) per unit^2, size
        ("key_light", (0.6, 0.45, 0.8), 20.0, 0.35),
        ("fill_light", (-0.7, 0.05, 0.65), 7.0, 0.5),
        ("rim_light", (0.15, 0.6, -0.6), 14.0, 0.3),
    )
    for name, offset, power, size in lights:
        light_data = bpy.data.lights.new(name, type="AREA")
        light_data.energy = power * distance**2  # inverse-square: same irradiance at any scale
        light_data.size = size * distance
        light = bpy.data.objects.new(name, light_data)
        light.location = tuple(target + distance * np.asarray(offset))
        scene.collection.objects.link(light)
        look_at(light, target)
    world = bpy.data.worlds.new("neutral_world")
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (0.18, 0.18, 0.18, 1.0)
    background.inputs["Strength"].default_value = 0.5
    scene.world = world

    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = choose_cycles_device(bpy, job["cycles_device"])
    cycles.samples = job["cycles_samples"]
    cycles.use_adaptive_sampling = False
    cycles.use_denoising = False
    cycles.seed = job["seed"] % 2**31  # Cycles' seed is a signed 32-bit int
    cycles.use_animated_seed = False
    cycles.max_bounces = 4
    scene.render.threads_mode = "AUTO"


def setup_common(scene, job: dict, n_frames: int) -> None:
    """Size, frame range and colour management shared by both modes (Standard, no dither)."""
    render = scene.render
    render.resolution_x = render.resolution_y = job["resolution"]
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.fps = job["fps"]
    render.fps_base = 1.0
    render.film_transparent = False
    render.dither_intensity = 0.0
    render.use_compositing = False
    render.use_sequencer = False
    render.use_border = False
    scene.frame_start = 1
    scene.frame_end = n_frames
    scene.frame_step = 1
    scene.display_settings.display_device = "sRGB"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.view_settings.use_curve_mapping = False


# ---------------------------------------------------------------------------------------------
# outputs


def use_png(scene) -> None:
    """8-bit RGB PNG output."""
    settings = scene.render.image_settings
    settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"
    settings.compression = 15


def render_poster(bpy, scene, path: Path, frame: int) -> None:
    """One frame as PNG."""
    use_png(scene)
    scene.frame_set(frame)
    scene.render.filepath = str(path)
    scene.render.use_file_extension = False
    bpy.ops.render.render(write_still=True)
    if not path.is_file():
        raise JobError(f"Blender did not write the poster {path}")


def render_frames(bpy, scene, frames_dir: Path, n_frames: int) -> None:
    """Every frame as frames_dir/frame_0001.png ... (1-based like Blender's frames; names are
    zero-padded to at least 4 digits, all of one width)."""
    frames_dir.mkdir(parents=True, exist_ok=True)
    use_png(scene)
    digits = max(4, len(str(n_frames)))  # equal widths keep the names in frame order when sorted
    scene.render.filepath = str(frames_dir / ("frame_" + "#" * digits))
    scene.render.use_file_extension = True
    bpy.ops.render.render(animation=True)
    written = [frames_dir / f"frame_{i:0{digits}d}.png" for i in range(1, n_frames + 1)]
    missing = [p.name for p in written if not p.is_file()]
    if missing:
        raise JobError(f"Blender did not write frames {missing[:5]}")


def render_video(bpy, scene, path: Path, job: dict, quality: str | None = None) -> None:
    """The animation as H.264 in MP4, written by Blender's own FFmpeg (at the job's quality unless given)."""
    settings = scene.render.image_settings
    settings.media_type = "VIDEO"  # 5.0: must precede the FFmpeg settings
    settings.file_format = "FFMPEG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"
    ffmpeg = scene.render.ffmpeg
    ffmpeg.format = "MPEG4"
    ffmpeg.codec = "H264"
    ffmpeg.constant_rate_factor = quality or job["video_quality"]
    # x264 "realtime" preset: ~10% faster per frame than "good" at this size, for a slightly larger file.
    ffmpeg.ffmpeg_preset = "REALTIME"
    ffmpeg.gopsize = job["video_gop_size"]
    ffmpeg.use_max_b_frames = False
    ffmpeg.audio_codec = "NONE"
    # a '#'-free name would get the frame range appended; render to a fixed stem and rename
    staging = path.with_name(path.stem + "_####")
    for stale in path.parent.glob(path.stem + "_*.mp4"):  # left by an interrupted earlier try
        stale.unlink()
    scene.render.filepath = str(staging)
    scene.render.use_file_extension = True
    bpy.ops.render.render(animation=True)
    candidates = sorted(path.parent.glob(path.stem + "_*.mp4"))
    if len(candidates) != 1:
        raise JobError(f"expected one video from Blender next to {path}, found {[c.name for c in candidates]}")
    candidates[0].replace(path)


def frame_face_box(scene, box: tuple[int, int, int, int]) -> tuple:
    """Point the photo camera at a pixel box of its frame, rendered at the box's own size: each of its pixels has
    the centre it has in the whole frame. Returns what restore_whole_frame needs."""
    render, camera = scene.render, scene.camera
    whole = (render.resolution_x, render.resolution_y, camera.data.ortho_scale, tuple(camera.location))
    size = render.resolution_x
    left, top, width, height = box
    render.resolution_x, render.resolution_y = width, height
    camera.data.ortho_scale = max(width, height) / size  # AUTO sensor fit: the scale spans the longer side
    camera.location = (-0.5 + (left + width / 2) / size, 0.5 - (top + height / 2) / size, camera.location[2])
    return whole


def restore_whole_frame(scene, whole: tuple) -> None:
    render, camera = scene.render, scene.camera
    render.resolution_x, render.resolution_y, camera.data.ortho_scale, camera.location = whole


def render_face_cropped_video(bpy, scene, path: Path, job: dict, box: tuple[int, int, int, int],
                              background: Path) -> None:
    """The photo-mode video with only the face's box rendered: Blender writes the box's frames at a near-lossless
    quality, and each is pasted into `background` (a whole frame of this scene, rendered as PNG) and encoded
    as Blender would the whole frame (x264 at the job's CRF and GOP, BT.709, limited range)."""
    face_video = path.with_name(path.stem + "_face.mp4")
    whole = frame_face_box(scene, box)
    try:
        render_video(bpy, scene, face_video, job, FACE_VIDEO_QUALITY)
    finally:
        restore_whole_frame(scene, whole)
    try:
        written = paste_into_background(face_video, background, box, path, job)
    finally:
        face_video.unlink(missing_ok=True)
    if written != scene.frame_end - scene.frame_start + 1:
        raise JobError(f"the face video held {written} frames, the scene {scene.frame_end - scene.frame_start + 1}")


def i420_planes(buffer: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of an I420 (yuv420p) frame held as one flat buffer."""
    flat, luma, chroma = buffer.reshape(-1), width * height, (width // 2) * (height // 2)
    return (flat[:luma].reshape(height, width), flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:].reshape(height // 2, width // 2))


def paste_into_background(face_video: Path, background: Path, box: tuple[int, int, int, int], path: Path,
                          job: dict) -> int:
    """Encode `path` from the frames of `face_video` pasted at `box` into the `background` PNG; returns the
    frame count. The paste is done on the yuv420p planes, so the face's pixels are converted from RGB once, by
    Blender, as in a whole-frame video. Frames are streamed, one at a time."""
    from fractions import Fraction

    import av  # only a face-cropped job needs PyAV
    from av.video.reformatter import Interpolation

    left, top, width, height = box
    with av.open(str(background)) as still:
        photo = next(still.decode(video=0))
        size = (photo.width, photo.height)
        # the colour conversion Blender's writer uses: BT.709, limited range
        frame = photo.reformat(format="yuv420p", src_colorspace="ITU709", dst_colorspace="ITU709",
                               src_color_range="JPEG", dst_color_range="MPEG",
                               interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND).to_ndarray()
    planes = i420_planes(frame, *size)
    boxes = [(top, left, height, width)] + [(top // 2, left // 2, height // 2, width // 2)] * 2
    time_base = Fraction(1, job["fps"])
    written = 0
    with av.open(str(face_video)) as source, av.open(str(path), "w", format="mp4") as sink:
        stream = sink.add_stream("libx264", rate=job["fps"])
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.time_base = time_base
        context = stream.codec_context
        context.color_range = 1  # MPEG (limited); 1 below is BT.709, as Blender tags its videos
        context.colorspace = context.color_primaries = context.color_trc = 1
        stream.options = {"preset": X264_PRESET, "crf": str(VIDEO_CRF[job["video_quality"]]),
                          "g": str(job["video_gop_size"]), "bf": "0"}
        context.thread_count = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))  # this worker's share of cores
        for face in source.decode(video=0):
            if face.format.name != "yuv420p" or (face.width, face.height) != (width, height):
                raise JobError(f"the face video's frames are {face.format.name} {face.width}x{face.height}, "
                               f"expected yuv420p {width}x{height}")
            for plane, face_plane, (y, x, h, w) in zip(planes, i420_planes(face.to_ndarray(), width, height), boxes):
                plane[y:y + h, x:x + w] = face_plane
            whole = av.VideoFrame.from_ndarray(frame, format="yuv420p")
            whole.pts, whole.time_base = written, time_base
            whole.colorspace, whole.color_range = 1, 1
            for packet in stream.encode(whole):
                sink.mux(packet)
            written += 1
        for packet in stream.encode(None):
            sink.mux(packet)
    return written


def shift_keyframes(bpy, frames: float) -> None:
    """Move every keyframe of every action by `frames` along time."""
    for action in bpy.data.actions:
        for layer in action.layers:
            for strip in layer.strips:
                for channelbag in strip.channelbags:
                    for curve in channelbag.fcurves:
                        points = curve.keyframe_points
                        for prop in ("co", "handle_left", "handle_right"):
                            values = np.empty(len(points) * 2, dtype=np.float32)
                            points.foreach_get(prop, values)
                            values[0::2] += frames
                            points.foreach_set(prop, values)
                        curve.update()


def export_glb(bpy, path: Path, face, head, texture_node) -> None:
    """GLB: textured face, 52 morph targets (names in mesh extras.targetNames), and one
    animation "talk" of head pose and morph weights whose frame 1 is at t=0, as in the video.
    The texture is sampled linearly there (viewers magnify it)."""
    interpolation = texture_node.interpolation
    texture_node.interpolation = "Linear"
    scene = bpy.context.scene
    frame_range = scene.frame_start, scene.frame_end
    shift_keyframes(bpy, -1.0)
    scene.frame_start, scene.frame_end = frame_range[0] - 1, frame_range[1] - 1
    for obj in bpy.context.scene.objects:
        obj.select_set(obj in (face, head))
    bpy.context.view_layer.objects.active = face
    try:
        result = bpy.ops.export_scene.gltf(
            filepath=str(path),
            check_existing=False,
            export_format="GLB",
            use_selection=True,
            export_texcoords=True,
            export_normals=True,
            export_materials="EXPORT",
            export_image_format="AUTO",
            export_yup=False,  # the rig is already y-up with +z toward the viewer, as glTF wants
            export_apply=False,
            export_morph=True,
            export_morph_normal=False,
            export_morph_tangent=False,
            export_morph_animation=True,
            export_animations=True,
            export_animation_mode="ACTIVE_ACTIONS",
            export_nla_strips_merged_animation_name="talk",
            export_force_sampling=False,
            export_cameras=False,
            export_lights=False,
            export_extras=False,
        )
    finally:
        texture_node.interpolation = interpolation
        shift_keyframes(bpy, 1.0)
        scene.frame_start, scene.frame_end = frame_range
    if "FINISHED" not in result or not path.is_file():
        raise JobError(f"glTF export did not write {path}")


def save_blend(bpy, path: Path, image) -> None:
    """Self-contained .blend: the texture is packed into it."""
    image.pack()
    bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=True, copy=True)
    if not path.is_file():
        raise JobError(f"Blender did not write {path}")


# ---------------------------------------------------------------------------------------------
# the job


def passes_colour_through(job: dict) -> bool:
    """Whether the texture's bytes reach the frames unconverted: a Non-Color texture under the Raw view. In photo
    mode that gives the same pixels as an sRGB texture under the Standard view, without transforming every frame
    from linear to sRGB on the CPU (about 2 ms of a 512² frame). Jobs that write a GLB or .blend keep sRGB, since
    those files carry the scene to whoever opens them. `job` is a loaded one (load_job sets the field's default)."""
    return job["colour_passthrough"] and job["mode"] == "photo" and not writes_scene_files(job)


def writes_scene_files(job: dict) -> bool:
    """Whether the job writes a GLB or .blend: files that carry the scene, as built, to whoever opens them."""
    return bool(job["outputs"]["glb"] or job["outputs"]["blend"])


def face_crop_box(job: dict, rig: dict) -> tuple[int, int, int, int] | None:
    """The box a photo-mode video renders (see face_box), or None to render whole frames: the job turned cropping
    off, it renders in lit mode, it writes a GLB or .blend (they keep the whole frame's camera), or it asks for a
    lossless video (Blender writes that as yuv444p, which the yuv420p paste does not take)."""
    wanted = job["face_crop"] and job["mode"] == "photo" and job["outputs"]["video"]
    if not wanted or writes_scene_files(job) or job["video_quality"] == "LOSSLESS":
        return None
    return face_box(rig, job["resolution"])


def run_job(job: dict, reset: bool = True) -> dict:
    """Build the scene once, render and export everything the job asks for; returns the result.
    `reset=False` skips the factory reset when the caller has just emptied the scene."""
    import bpy

    out_dir = Path(job["out_dir"])
    outputs = job["outputs"]
    names = list(job["shape_key_names"])
    rig = load_rig(job["rig_npz"], names)
    n_frames = int(rig["weights"].shape[0])
    if not 1 <= job["poster_frame"] <= n_frames:
        raise JobError(f"poster_frame {job['poster_frame']} is outside frames 1..{n_frames}")
    seconds: dict[str, float] = {}
    paths: dict[str, object] = {}

    started = time.perf_counter()
    if reset:
        reset_blender(bpy)
    scene = bpy.context.scene
    passthrough = passes_colour_through(job)
    image = load_texture(bpy, job["texture_png"], "Non-Color" if passthrough else "sRGB")
    material, texture_node = make_material(bpy, image, job["mode"])
    face = build_face(bpy, rig, names, material)
    head = build_head(bpy, face, rig["pivot"])
    animate(bpy, face, head, rig, names, every_frame=writes_scene_files(job))
    setup_common(scene, job, n_frames)
    if job["mode"] == "photo":
        setup_photo_mode(bpy, scene, tuple(image.size), material)
        if passthrough:
            scene.view_settings.view_transform = "Raw"
    else:
        setup_lit_mode(bpy, scene, job, rig["vertices"])
    animation_error = check_animation(bpy, face, rig)
    seconds["build"] = time.perf_counter() - started
    LOG.info("scene built: %d vertices, %d faces, %d shape keys, %d frames, mode %s in %.2fs",
             len(rig["vertices"]), len(rig["faces"]), len(names), n_frames, job["mode"], seconds["build"])

    started = time.perf_counter()
    if outputs["poster"]:
        paths["poster"] = out_dir / outputs["poster"]
        render_poster(bpy, scene, paths["poster"], job["poster_frame"])
    if outputs["frames_dir"]:
        paths["frames_dir"] = out_dir / outputs["frames_dir"]
        render_frames(bpy, scene, paths["frames_dir"], n_frames)
    box = face_crop_box(job, rig)
    if outputs["video"]:
        paths["video"] = out_dir / outputs["video"]
        if box is None:
            render_video(bpy, scene, paths["video"], job)
        else:  # outside the face's box every frame is the still photo: render it once, whole
            LOG.info("video: face box %dx%d at (%d, %d), %.0f%% of the frame", box[2], box[3], box[0], box[1],
                     100.0 * box[2] * box[3] / job["resolution"] ** 2)
            scratch = "poster" not in paths  # else the poster is that whole frame
            background = out_dir / "face_crop_background.png" if scratch else paths["poster"]
            if scratch:
                render_poster(bpy, scene, background, 1)
            try:
                render_face_cropped_video(bpy, scene, paths["video"], job, box, background)
            finally:
                if scratch:
                    background.unlink(missing_ok=True)
    seconds["render"] = time.perf_counter() - started
    LOG.info("rendered in %.2fs", seconds["render"])

    started = time.perf_counter()
    scene.frame_set(1)
    if outputs["blend"]:
        paths["blend"] = out_dir / outputs["blend"]
        save_blend(bpy, paths["blend"], image)
    if outputs["glb"]:
        paths["glb"] = out_dir / outputs["glb"]
        export_glb(bpy, paths["glb"], face, head, texture_node)
    seconds["export"] = time.perf_counter() - started
    LOG.info("exported in %.2fs", seconds["export"])

    return {
        "paths": {key: str(value) for key, value in paths.items()},
        "frames": n_frames,
        "seconds": seconds,
        "blender_version": bpy.app.version_string,
        "animation_max_error": animation_error,
        "colour_passthrough": passthrough,
        "face_crop": list(box) if box is not None else None,
    }


def setup_logging(out_dir: Path) -> logging.Handler:
    """Log to out_dir/blender.log (appending: Blender's own output goes there too); returns the
    handler, which a serving process removes after the job."""
    handler = logging.FileHandler(out_dir / "blender.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    return handler


def failure_message(exc: Exception) -> str:
    """One line for a failed job: a JobError's own text, else the exception's type and text."""
    message = str(exc) if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"
    return " ".join(message.split())


def write_result(out_dir: Path, result: dict) -> Path:
    result_path = out_dir / "result.json"
    result_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    LOG.info("wrote %s", result_path)
    return result_path


def main(argv: list[str] | None = None) -> int:
    """Command line entry: --job JOB.json (exit 0 and print result.json's path, or exit 1), or
    --serve on two pipe fds (exit 0 at end of input)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--job", type=Path, help="job JSON file")
    mode.add_argument("--serve", action="store_true", help="take job paths from --fd-in until it closes")
    parser.add_argument("--fd-in", type=int, help="--serve: pipe fd the job messages arrive on")
    parser.add_argument("--fd-out", type=int, help="--serve: pipe fd the answers go to")
    args = parser.parse_args(argv)
    if args.serve:
        if args.fd_in is None or args.fd_out is None:
            parser.error("--serve needs --fd-in and --fd-out")
        return serve(args.fd_in, args.fd_out)
    try:
        job = load_job(args.job)
        out_dir = Path(job["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
    except (JobError, OSError) as exc:
        print(f"blender job failed: {exc}", file=sys.stderr)
        return 1
    setup_logging(out_dir)
    LOG.info("job %s", args.job.resolve())
    try:
        result = run_job(job)
    except Exception as exc:  # report every failure as one line; the log keeps the traceback
        LOG.error("job failed:\n%s", traceback.format_exc())
        print(f"blender job failed: {failure_message(exc)}", file=sys.stderr)
        return 1
    print(write_result(out_dir, result), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# serve mode: one process, many jobs in turn

# ID collections a job fills; all of them must be empty between jobs
JOB_DATA = ("objects", "meshes", "images", "materials", "actions", "shape_keys", "cameras", "lights",
            "worlds", "node_groups", "textures")
_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def redirect_output(path: Path | None) -> None:
    """Point fds 1 and 2 (Python's and Blender's C output) at a job's log, or at /dev/null.
    Buffers are flushed first, so no line of one job lands in another's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    if _LIBC is not None:
        _LIBC.fflush(None)
    fd = (os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path is not None
          else os.open(os.devnull, os.O_WRONLY))
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def empty_scene(bpy) -> dict[str, int]:
    """Factory settings, then purge what is left unused; returns what remains of JOB_DATA (all 0)."""
    reset_blender(bpy)
    bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)
    gc.collect()
    return {name: len(getattr(bpy.data, name)) for name in JOB_DATA}


def serve_job(request: dict) -> dict:
    """One job of a serving process: the answer message (result.json is written too)."""
    try:
        job_path = Path(request["job"])
    except (KeyError, TypeError) as exc:
        return {"ok": False, "error": f"bad request {request!r}: {exc}"}
    try:
        job = load_job(job_path)
        out_dir = Path(job["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
    except (JobError, OSError) as exc:
        return {"ok": False, "error": failure_message(exc)}
    redirect_output(out_dir / "blender.log")
    handler = setup_logging(out_dir)
    try:
        os.chdir(out_dir)
        LOG.info("job %s (serving process %d)", job_path.resolve(), os.getpid())
        try:
            result = run_job(job, reset=False)
            write_result(out_dir, result)
        except Exception as exc:  # one line back; the log keeps the traceback
            LOG.error("job failed:\n%s", traceback.format_exc())
            return {"ok": False, "error": failure_message(exc)}
        return {"ok": True, "result": result}
    finally:
        LOG.removeHandler(handler)
        handler.close()
        redirect_output(None)
        os.chdir("/")


def serve(fd_in: int, fd_out: int) -> int:
    """Answer job messages from fd_in on fd_out, one at a time, until fd_in closes."""
    import bpy

    def send(message: dict) -> None:
        data = (json.dumps(message) + "\n").encode("utf-8")
        while data:
            data = data[os.write(fd_out, data):]

    for fd in (fd_in, fd_out):  # whatever Blender starts must not hold the protocol pipes open
        os.set_inheritable(fd, False)
    os.chdir("/")
    with open(fd_in, "rb", closefd=True) as requests:
        left = empty_scene(bpy)
        redirect_output(None)  # start-up output went to the first job's log
        send({"ready": True, "pid": os.getpid(), "blender_version": bpy.app.version_string, "left": left})
        for line in requests:
            try:
                request = json.loads(line)
            except ValueError as exc:
                answer = {"ok": False, "error": f"bad request line: {exc}"}
            else:
                answer = serve_job(request)
            send(answer)
            send({"ready": True, "pid": os.getpid(), "left": empty_scene(bpy)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
