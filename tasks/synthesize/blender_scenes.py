"""One shard of a synthetic data set inside Blender (bpy): for each identity, its face rig is built
once, then every sample's expression, head pose, camera, lights and sky are set and rendered.

    python tasks/synthesize/blender_scenes.py --job JOB.json

Like tasks/render/blender_job.py (whose scene-building functions it uses), it imports only the
standard library, numpy and bpy, runs as a plain file path, logs to out_dir/blender.log, writes
out_dir/result.json and exits 0, or prints one line to stderr and exits 1.

The job names the identities ({"rig_npz", "texture_png", "names"}); each rig file holds the rig
arrays of blender_job.RIG_KEYS (`weights` and `head_pose` are the samples), the draws of
sampling.SceneDraws and `face_class` (F,) material classes. For each sample it writes
`images/<name>.png` and `passes/<name>.exr` (multilayer: Combined, Depth, Normal, Material Index)
under out_dir, and per identity `scene_<k>.npz`: the evaluated landmark positions (world),
Blender's camera-to-world matrices and lens, its own projection of the landmarks
(world_to_camera_view), and each landmark's visibility by a ray cast from the camera.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "render"))
import blender_job as bj  # noqa: E402  (a sibling file, not a package: bpy runs this as a path)

LOG = logging.getLogger("avatarflow.blender_scenes")
N_LANDMARKS = 478
N_MESH_POINTS = 468
SENSOR_WIDTH_MM = 36.0
# a landmark is hidden when the first surface on the ray from the camera lies this much (in face
# widths) in front of it: the landmark's own surface is hit at its own distance
OCCLUSION_MARGIN = 0.01
SCENE_KEYS = ("camera", "lights", "sky", "background", "face_class")
BACKDROP_BEHIND = 1.5
"""The backdrop's distance behind the face, in camera distances."""


def load_scene_arrays(npz_path: str, n_samples: int, n_faces: int) -> dict[str, np.ndarray]:
    with np.load(npz_path, allow_pickle=False) as data:
        missing = [key for key in SCENE_KEYS if key not in data.files]
        if missing:
            raise bj.JobError(f"rig file {npz_path} lacks scene arrays {missing}")
        arrays = {key: np.asarray(data[key]) for key in SCENE_KEYS}
    if arrays["camera"].shape != (n_samples, 6) or arrays["sky"].shape != (n_samples, 3):
        raise bj.JobError(f"camera {arrays['camera'].shape} or sky {arrays['sky'].shape} does not hold {n_samples} samples")
    if arrays["lights"].ndim != 3 or arrays["lights"].shape[0] != n_samples or arrays["lights"].shape[2] != 8:
        raise bj.JobError(f"lights have shape {arrays['lights'].shape}, expected ({n_samples}, L, 8)")
    if arrays["face_class"].shape != (n_faces,):
        raise bj.JobError(f"face_class has shape {arrays['face_class'].shape}, expected ({n_faces},)")
    return arrays


def direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector from the face toward a point at this azimuth (toward +x) and elevation (toward
    +y) off the frontal axis (+z)."""
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.sin(azimuth) * math.cos(elevation), math.sin(elevation),
                     math.cos(azimuth) * math.cos(elevation)])


def class_materials(bpy, face, material, classes: np.ndarray, colours: dict[str, list[float]]) -> None:
    """One material slot per class whose pass index is the class id, so the Material Index pass is
    the segmentation: a copy of the textured material, or for a class in `colours` (the head's skin,
    hair) a plain Principled BSDF of that linear RGB colour."""
    mesh = face.data
    mesh.materials.clear()
    present = sorted(set(int(c) for c in classes))
    for slot, class_id in enumerate(present):
        if str(class_id) in colours:
            copy = bpy.data.materials.new(f"class_{class_id}")
            bsdf = next(node for node in copy.node_tree.nodes if node.type == "BSDF_PRINCIPLED")
            bsdf.inputs["Base Color"].default_value = (*colours[str(class_id)], 1.0)
            bsdf.inputs["Roughness"].default_value = 0.6
        else:
            copy = material.copy()
            copy.name = f"class_{class_id}"
        copy.pass_index = class_id
        mesh.materials.append(copy)
    slot_of = {class_id: slot for slot, class_id in enumerate(present)}
    mesh.polygons.foreach_set("material_index", np.array([slot_of[int(c)] for c in classes], dtype=np.int32))


def build_world(bpy, scene):
    """A sky texture lighting the scene and filling the background; returns its two nodes.
    Hosek-Wilkie is analytic: the physical (multiple-scattering) sky added about 0.9 s per 512²
    render on one core. The sky's zenith is turned from Blender's +Z to the rig's up, +Y."""
    world = bpy.data.worlds.new("sky_world")
    nodes, links = world.node_tree.nodes, world.node_tree.links
    coordinates = nodes.new("ShaderNodeTexCoord")
    turn = nodes.new("ShaderNodeMapping")
    turn.vector_type = "VECTOR"
    turn.inputs["Rotation"].default_value = (-math.pi / 2.0, 0.0, 0.0)
    sky = nodes.new("ShaderNodeTexSky")
    sky.sky_type = "HOSEK_WILKIE"
    background = nodes["Background"]
    links.new(coordinates.outputs["Generated"], turn.inputs["Vector"])
    links.new(turn.outputs["Vector"], sky.inputs["Vector"])
    links.new(sky.outputs["Color"], background.inputs["Color"])
    # the sky's importance map is rebuilt every render; the automatic size cost 4 s a render
    world.cycles.sampling_method = "MANUAL"
    world.cycles.sample_map_resolution = 256
    scene.world = world
    return sky, background


def build_lights(bpy, scene, count: int) -> list:
    lights = []
    for slot in range(count):
        light = bpy.data.objects.new(f"area_light_{slot}", bpy.data.lights.new(f"area_light_{slot}", type="AREA"))
        scene.collection.objects.link(light)
        lights.append(light)
    return lights


def setup_cycles(bpy, scene, job: dict) -> None:
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device = bj.choose_cycles_device(bpy, job["cycles_device"])
    cycles.samples = job["cycles_samples"]
    cycles.use_adaptive_sampling = False
    # the denoiser changes the colour pass only: labels come from the geometry and the other passes
    cycles.use_denoising = job["denoise"]
    cycles.denoiser = "OPENIMAGEDENOISE"
    cycles.denoising_quality = "FAST"
    cycles.denoising_prefilter = "FAST"
    cycles.use_animated_seed = False
    cycles.max_bounces = 4
    layer = scene.view_layers[0]
    layer.use_pass_z = layer.use_pass_normal = layer.use_pass_material_index = True


def pose_face(face, head, rig: dict, names: list, k: int) -> None:
    blocks = face.data.shape_keys.key_blocks
    for name, value in zip(names, rig["weights"][k]):
        blocks[name].value = float(value)
    head.rotation_euler = tuple(float(v) for v in rig["head_pose"][k, :3])
    head.location = tuple(float(v) for v in rig["pivot"] + rig["head_pose"][k, 3:])


def place_camera(camera, rig: dict, draws: dict, k: int, face_width: float, centre: np.ndarray) -> tuple[np.ndarray, float]:
    """Aim the camera at the posed face centre (plus jitter) from its orbit; returns (target, distance)."""
    lens, fill, azimuth, elevation, dx, dy = (float(v) for v in draws["camera"][k])
    pose = rig["head_pose"][k]
    rotation = bj.euler_xyz_matrix(*pose[:3])
    target = (centre - rig["pivot"]) @ rotation.T + rig["pivot"] + pose[3:] + face_width * np.array([dx, dy, 0.0])
    distance = face_width / fill * lens / SENSOR_WIDTH_MM
    camera.data.lens = lens
    camera.location = tuple(target + distance * direction(azimuth, elevation))
    camera.data.clip_start = distance / 100.0
    camera.data.clip_end = distance * 100.0
    bj.look_at(camera, target)
    return target, distance


def build_backdrop(bpy, scene):
    """A unit plane with an emissive image material, moved behind the face for samples that show a
    background image (pass index 0: the background class); returns (plane, image node)."""
    vertices = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int32)
    mesh = bj.build_mesh(bpy, "backdrop", vertices, faces)
    uv = bj.set_uv_layer(mesh, "backdrop", np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float32)[faces.ravel()])
    uv.active_render = True
    material = bpy.data.materials.new("backdrop")
    material.pass_index = 0
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    texture = nodes.new("ShaderNodeTexImage")
    emission = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(texture.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    mesh.materials.append(material)
    plane = bpy.data.objects.new("backdrop", mesh)
    scene.collection.objects.link(plane)
    plane.hide_render = True
    return plane, texture


def place_backdrop(bpy, plane, texture, images: dict, paths: list, camera, choice: int, distance: float) -> None:
    """Fill the view behind the face with background image `choice` (cropped to a square), or hide
    the plane for the sky (-1)."""
    plane.hide_render = choice < 0
    if choice < 0:
        return
    if choice not in images:
        images[choice] = bpy.data.images.load(paths[choice], check_existing=True)
    image = images[choice]
    texture.image = image
    width, height = image.size
    side = min(width, height) / max(width, height)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    uv = (uv - 0.5) * ([side, 1.0] if width > height else [1.0, side]) + 0.5  # the centre square
    faces = np.array([0, 1, 2, 0, 2, 3])
    plane.data.uv_layers["backdrop"].uv.foreach_set("vector", uv[faces].astype(np.float32).ravel())
    far = distance * (1.0 + BACKDROP_BEHIND)
    span = 1.05 * far * SENSOR_WIDTH_MM / camera.data.lens  # the frustum's width at that depth, and a margin
    matrix = np.array(camera.matrix_world, dtype=np.float64)
    plane.location = tuple(matrix[:3, 3] - far * matrix[:3, 2])  # along the camera's -Z
    plane.rotation_euler = camera.rotation_euler
    plane.scale = (span, span, 1.0)


def light_scene(lights: list, sky, background, draws: dict, k: int, target: np.ndarray, distance: float) -> None:
    for light, (on, azimuth, elevation, power, size, *colour) in zip(lights, draws["lights"][k]):
        light.hide_render = on < 0.5
        light.location = tuple(target + distance * direction(azimuth, elevation))
        light.data.energy = float(power) * distance**2
        light.data.size = float(size) * distance
        light.data.color = tuple(float(c) for c in colour)
        bj.look_at(light, target)
    strength, sun_elevation, sun_rotation = (float(v) for v in draws["sky"][k])
    background.inputs["Strength"].default_value = strength
    elevation, rotation = math.radians(sun_elevation), math.radians(sun_rotation)
    sky.sun_direction = (math.cos(elevation) * math.sin(rotation), math.cos(elevation) * math.cos(rotation),
                         math.sin(elevation))


def landmark_labels(bpy, scene, face, camera, face_width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(world positions, Blender's camera-view projection, visibility) of the 478 landmarks."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    depsgraph = bpy.context.evaluated_depsgraph_get()
    world = bj.evaluated_world_vertices(bpy, face)[:N_LANDMARKS]
    origin = np.array(camera.matrix_world.translation, dtype=np.float64)
    view = np.empty((N_LANDMARKS, 3))
    visible = np.zeros(N_LANDMARKS, dtype=bool)
    for i, point in enumerate(world):
        view[i] = tuple(world_to_camera_view(scene, camera, Vector(point)))
        ray = point - origin
        length = float(np.linalg.norm(ray))
        hit, *_ = scene.ray_cast(depsgraph, Vector(origin), Vector(ray / length),
                                 distance=length - OCCLUSION_MARGIN * face_width)
        visible[i] = not hit
    return world, view, visible


def render_sample(bpy, scene, png: Path, exr: Path) -> None:
    bpy.ops.render.render(write_still=False)
    result = bpy.data.images["Render Result"]
    settings = scene.render.image_settings
    settings.media_type = "IMAGE"
    bj.use_png(scene)
    result.save_render(str(png), scene=scene)
    settings.media_type = "MULTI_LAYER_IMAGE"
    settings.color_depth = "32"
    settings.exr_codec = "ZIP"
    result.save_render(str(exr), scene=scene)
    if not png.is_file() or not exr.is_file():
        raise bj.JobError(f"Blender did not write {png.name} and {exr.name}")


def render_identity(bpy, job: dict, identity: dict, k_identity: int, out_dir: Path) -> dict:
    names = list(job["shape_key_names"])
    rig = bj.load_rig(identity["rig_npz"], names)
    n_samples = len(rig["weights"])
    if len(identity["names"]) != n_samples:
        raise bj.JobError(f"identity {k_identity} names {len(identity['names'])} images for {n_samples} samples")
    draws = load_scene_arrays(identity["rig_npz"], n_samples, len(rig["faces"]))
    bj.reset_blender(bpy)
    scene = bpy.context.scene
    image = bj.load_texture(bpy, identity["texture_png"])
    material, _ = bj.make_material(bpy, image, "lit")
    face = bj.build_face(bpy, rig, names, material)
    class_materials(bpy, face, material, draws["face_class"], identity.get("class_colours", {}))
    head = bj.build_head(bpy, face, rig["pivot"])
    bj.setup_common(scene, job, 1)
    camera = bj.add_camera(bpy, "dataset_camera")
    camera.data.type = "PERSP"
    camera.data.sensor_width = SENSOR_WIDTH_MM
    camera.data.sensor_fit = "HORIZONTAL"
    sky, background = build_world(bpy, scene)
    lights = build_lights(bpy, scene, draws["lights"].shape[1])
    # only when there are images to show: scene.ray_cast sees objects hidden from the render
    backdrop = build_backdrop(bpy, scene) if job["backgrounds"] else None
    background_images: dict[int, object] = {}
    setup_cycles(bpy, scene, job)
    scene.cycles.seed = (job["seed"] + k_identity) % 2**31

    surface = rig["vertices"][:N_MESH_POINTS]
    low, high = surface.min(axis=0), surface.max(axis=0)
    centre, face_width = (low + high) / 2.0, float(high[0] - low[0])
    landmarks = np.zeros((n_samples, N_LANDMARKS, 3))
    view = np.zeros((n_samples, N_LANDMARKS, 3))
    visible = np.zeros((n_samples, N_LANDMARKS), dtype=bool)
    camera_world = np.zeros((n_samples, 4, 4))
    for k, name in enumerate(identity["names"]):
        started = time.perf_counter()
        pose_face(face, head, rig, names, k)
        target, distance = place_camera(camera, rig, draws, k, face_width, centre)
        light_scene(lights, sky, background, draws, k, target, distance)
        bpy.context.view_layer.update()
        if backdrop is not None:
            place_backdrop(bpy, *backdrop, background_images, job["backgrounds"], camera,
                           int(draws["background"][k]), distance)
            bpy.context.view_layer.update()
        landmarks[k], view[k], visible[k] = landmark_labels(bpy, scene, face, camera, face_width)
        camera_world[k] = np.array(camera.matrix_world, dtype=np.float64)
        render_sample(bpy, scene, out_dir / "images" / f"{name}.png", out_dir / "passes" / f"{name}.exr")
        LOG.info("sample %s rendered in %.2fs", name, time.perf_counter() - started)
    path = out_dir / f"scene_{k_identity}.npz"
    np.savez(path, landmarks_world=landmarks, camera_view=view, visible=visible, camera_world=camera_world,
             lens_mm=draws["camera"][:, 0].astype(np.float64))
    return {"scene": str(path), "samples": n_samples}


def run_job(job: dict) -> dict:
    import bpy

    out_dir = Path(job["out_dir"])
    for folder in ("images", "passes"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    identities = [render_identity(bpy, job, identity, k, out_dir) for k, identity in enumerate(job["identities"])]
    return {"identities": identities, "seconds": time.perf_counter() - started,
            "blender_version": bpy.app.version_string}


def load_job(job_path: Path) -> dict:
    try:
        job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise bj.JobError(f"cannot read job file {job_path}: {exc}") from exc
    fields = {"out_dir": str, "resolution": int, "cycles_samples": int, "cycles_device": str, "seed": int,
              "shape_key_names": list, "identities": list, "denoise": bool}
    for key, kind in fields.items():
        if not isinstance(job.get(key), kind) or (kind is not bool and isinstance(job.get(key), bool)):
            raise bj.JobError(f"job field {key!r} is missing or not a {kind.__name__}")
    if job["resolution"] < 2 or job["resolution"] % 2 or job["cycles_samples"] < 1 or job["seed"] < 0:
        raise bj.JobError("resolution must be even and >= 2, cycles_samples >= 1 and seed >= 0")
    job.setdefault("fps", 25)
    job.setdefault("backgrounds", [])
    for identity in job["identities"]:
        if not {"rig_npz", "texture_png", "names"} <= set(identity):
            raise bj.JobError("each identity needs rig_npz, texture_png and names")
    return job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True, help="job JSON file")
    args = parser.parse_args(argv)
    try:
        job = load_job(args.job)
        out_dir = Path(job["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
    except (bj.JobError, OSError) as exc:
        print(f"blender job failed: {exc}", file=sys.stderr)
        return 1
    handler = logging.FileHandler(out_dir / "blender.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for logger in (LOG, bj.LOG):
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        result = run_job(job)
    except Exception as exc:  # one line out; the log keeps the traceback
        LOG.error("job failed:\n%s", traceback.format_exc())
        print(f"blender job failed: {bj.failure_message(exc)}", file=sys.stderr)
        return 1
    print(bj.write_result(out_dir, result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
