"""One shard: reconstruct each identity's rig, draw its scenes, render them in one Blender process,
and turn what Blender reports into N-first label arrays. No Prefect here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.animate.emotion import EMOTIONS
from stores.location import DataLocation
from stores.synthetic_store import IMAGE_ARRAY
from stores.model_registry import DIFFUSION_MODEL, GAN_MODEL
from tasks.common.arkit import ARKIT_NAMES
from tasks.common.errors import AvatarInputError
from tasks.identity.config import IdentityConfig
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_image
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.rig import FaceRig, reconstruct
from tasks.reconstruct.topology import CHIN_BOTTOM, FOREHEAD_TOP, N_LANDMARKS
from tasks.render.blender_worker import run_one_shot
from tasks.synthesize.config import SynthesisConfig
from tasks.synthesize.head import FEATHER, build_head, feather_face_edge, head_colours, srgb_to_linear
from tasks.synthesize.labels import (CLASS_ID, euler_xyz, extrinsics, head_angles_to_camera, intrinsics, project, to_camera,
                                     triangle_classes)
from tasks.synthesize.plan import Identity, Shard
from tasks.synthesize.sampling import SceneDraws, draw_scenes
from tasks.synthesize.shape import ShapeModel, draw_shape_coefficients, shape_offset_px

SCENES_SCRIPT = Path(__file__).resolve().with_name("blender_scenes.py")
TEXTURE_SIDE = 512
"""Side of the portrait crop the rig's texture is cut from, whatever the render size."""
PROJECTION_TOLERANCE_PX = 0.01
"""Our projection of the landmarks and Blender's own may differ by float rounding only."""
_EXR_LAYER = "ViewLayer"
_NO_HIT_DEPTH = 1e9  # Cycles writes 1e10 where a ray leaves the scene


class LabelMismatch(RuntimeError):
    """Blender's camera and ours disagree: a bug, not bad input."""


@dataclass
class ShardResult:
    arrays: dict[str, np.ndarray]
    rows: list[dict]
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    """{file name inside the data set's images/: the rendered file in the work folder}"""

    def as_image_array(self, start: int, n_samples: int, side: int) -> tuple[np.ndarray, list[dict]]:
        """The renders as rows [start, start + n) of an N×side×side×3 array (zeros where nothing
        was rendered), and the rows pointing into it: `images.zarr/<sample>`."""
        array = np.zeros((n_samples, side, side, 3), np.uint8)
        rows = []
        for row in self.rows:
            with Image.open(self.images[row["image"].removeprefix("images/")]) as picture:
                array[row["sample"] - start] = np.asarray(picture.convert("RGB"))
            rows.append({**row, "image": f"{IMAGE_ARRAY}/{row['sample']}"})
        return array, rows


def _rig_file(path: Path, texture_path: Path, rig: FaceRig, draws: SceneDraws) -> dict[str, list[float]]:
    """The rig with its head, its texture feathered into the head's skin, and the scene draws, as
    the Blender script reads them; returns the linear RGB colour of each plain-coloured class (head
    skin, hair)."""
    head = build_head(rig.vertices)
    unused_uv = np.zeros((len(head.vertices), 2), np.float32)
    head_deltas = rig.deltas[:, head.owner] * head.follow[None, :, None]
    classes = np.concatenate([triangle_classes(rig.faces, rig.parts, rig.uv_canonical),
                              np.where(head.hair, CLASS_ID["hair"], CLASS_ID["head"]).astype(np.uint8)])
    np.savez(path, vertices=np.concatenate([rig.vertices, head.vertices]).astype(np.float32),
             faces=np.concatenate([rig.faces, head.faces]).astype(np.int32),
             uv_photo=np.concatenate([rig.uv_photo, unused_uv]).astype(np.float32),
             uv_canonical=np.concatenate([rig.uv_canonical, unused_uv]).astype(np.float32),
             deltas=np.concatenate([rig.deltas, head_deltas], axis=1).astype(np.float32),
             pivot=rig.pivot.astype(np.float32), weights=draws.weights, head_pose=draws.head_pose,
             camera=draws.camera, lights=draws.lights, sky=draws.sky, background=draws.background,
             face_class=classes)
    landmarks = rig.landmarks_px
    face_height = float(np.linalg.norm(landmarks[FOREHEAD_TOP, :2] - landmarks[CHIN_BOTTOM, :2]))
    colours = head_colours(rig.texture, landmarks, face_height)
    texture = feather_face_edge(rig.texture, landmarks, colours["skin"], FEATHER * face_height)
    Image.fromarray(texture, mode="RGB").save(texture_path)
    return {str(CLASS_ID["head"]): srgb_to_linear(colours["skin"]).tolist(),
            str(CLASS_ID["hair"]): srgb_to_linear(colours["hair"]).tolist()}


def read_passes(exr_path: Path, world_to_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depth (H, W) f32, unit normals (H, W, 3) f16 in camera axes, segmentation (H, W) u8) from
    one multilayer EXR; depth and normals are 0 where the ray met nothing. Depth is the distance
    along the camera axis (camera-space z), as in `landmarks_3d`."""
    import OpenEXR

    with OpenEXR.File(str(exr_path)) as exr:
        channels = {name: channel for part in exr.parts for name, channel in part.channels.items()}
        depth = np.array(channels[f"{_EXR_LAYER}.Depth.Z"].pixels, dtype=np.float32)
        normal_world = np.stack([channels[f"{_EXR_LAYER}.Normal.{axis}"].pixels for axis in "XYZ"], axis=-1)
        classes = np.array(channels[f"{_EXR_LAYER}.Material Index.X"].pixels)
    empty = depth >= _NO_HIT_DEPTH
    depth[empty] = 0.0
    normals = normal_world.astype(np.float64) @ world_to_camera[:3, :3].T
    # the pass is pixel-filtered: an edge pixel averages the surface with the empty background
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    normals = np.where(length > 1e-6, normals / np.maximum(length, 1e-6), 0.0)
    normals[empty] = 0.0
    return depth, normals.astype(np.float16), np.rint(classes).astype(np.uint8)


@dataclass(frozen=True)
class FaceSources:
    """Where identities' faces come from: portraits decoded under `ingest`'s limits, or the
    production generators of `data_dir`'s registry."""

    data_dir: str | None = None
    backgrounds: tuple[str, ...] = ()
    """Background image files a sample may show behind the head (none: the sky)."""
    ingest: IngestConfig = field(default_factory=IngestConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    shape_model: ShapeModel | None = None
    """The training faces' shape components identities move along (None: shapes as reconstructed)."""


def generated_portrait(seed: int, sources: FaceSources) -> tuple[np.ndarray, dict[str, int]]:
    """The portrait `generate:<seed>` gets from the production GAN and refiner, and their versions."""
    from tasks.common.torch_utils import resolve_device  # torch loads here, on the worker
    from tasks.identity.generate import generate_identity
    from tasks.identity.models import production_model
    from tasks.reconstruct.landmarks import detect_faces

    if sources.data_dir is None:
        raise AvatarInputError("generated identities need the data dir whose registry holds the GAN")
    config = sources.identity
    device = str(resolve_device(config.device))
    generator, gan_version = production_model(sources.data_dir, GAN_MODEL, device)
    diffusion, diffusion_version = production_model(sources.data_dir, DIFFUSION_MODEL, device)
    result = generate_identity(seed, generator, diffusion, config.truncation or generator.config.truncation,
                               config.generate_strength, config.max_draws, config.portrait_side,
                               has_face=lambda image: bool(detect_faces(image, max_faces=1)),
                               upscale_strength=config.upscale_strength)
    if isinstance(result, list):
        raise AvatarInputError(f"no face found in {len(result)} generated draws from seed {seed}")
    return result.portrait, {GAN_MODEL: gan_version, DIFFUSION_MODEL: diffusion_version}


def _identity_rig(identity: Identity, sources: FaceSources, shape: np.ndarray | None) -> tuple[FaceRig, str]:
    """The identity's rig, its face moved by `shape` (coefficients of sources.shape_model), and
    where its face came from."""
    if identity.generate_seed is not None:
        image, models = generated_portrait(identity.generate_seed, sources)
        source = f"{identity.source} ({', '.join(f'{name} v{v}' for name, v in sorted(models.items()))})"
    else:
        image, source = load_image(identity.portrait, sources.ingest), identity.source
    model = sources.shape_model
    offset = None if shape is None or model is None else (lambda landmarks: shape_offset_px(landmarks, model, shape))
    return reconstruct(image, TEXTURE_SIDE, sources.reconstruct, offset), source


def identity_shape(identity: Identity, sources: FaceSources, config: SynthesisConfig, seed: int) -> np.ndarray | None:
    """The identity's shape coefficients (None without a shape model or variation)."""
    if sources.shape_model is None or config.shape_variation == 0:
        return None
    return draw_shape_coefficients(seed, identity.index, sources.shape_model, config.shape_variation)


def local_backgrounds(sources: FaceSources, work_dir: Path) -> list[str]:
    """The background images as local files Blender can load (URLs are fetched into `work_dir`)."""
    paths = []
    for k, background in enumerate(sources.backgrounds):
        location = DataLocation(background)
        if location.is_local:
            paths.append(str(location.local_path))
        else:
            paths.append(str(location.get_file(work_dir / f"background_{k}{Path(location.name).suffix}")))
    return paths


def render_shard(shard: Shard, work_dir: Path, config: SynthesisConfig, seed: int,
                 sources: FaceSources = FaceSources()) -> ShardResult:
    """Render a shard in `work_dir` and return its labels and images (rows of identities without a
    usable face stay zero with `rendered` false; `failures` says why)."""
    seconds: dict[str, float] = {}
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    failures: dict[str, str] = {}
    job_identities, kept = [], []
    for identity in shard.identities:
        shape = identity_shape(identity, sources, config, seed)
        try:
            rig, source = _identity_rig(identity, sources, shape)
        except AvatarInputError as error:
            failures[identity.name] = str(error)
            continue
        draws = draw_scenes(seed, identity.index, shard.samples_per_identity, config, len(sources.backgrounds))
        rig_path = work_dir / f"{identity.name}.npz"
        texture_path = work_dir / f"{identity.name}.png"
        colours = _rig_file(rig_path, texture_path, rig, draws)
        job_identities.append({"rig_npz": str(rig_path), "texture_png": str(texture_path),
                               "names": shard.sample_names(identity), "class_colours": colours})
        kept.append((identity, draws, source, shape))
    seconds["reconstruct"] = time.perf_counter() - started

    n, res = shard.n_samples, config.resolution
    arrays = {
        "landmarks_2d": np.zeros((n, N_LANDMARKS, 2), np.float32),
        "landmarks_3d": np.zeros((n, N_LANDMARKS, 3), np.float32),
        "visible": np.zeros((n, N_LANDMARKS), bool),
        "depth": np.zeros((n, res, res), np.float32),
        "normals": np.zeros((n, res, res, 3), np.float16),
        "segmentation": np.zeros((n, res, res), np.uint8),
        "weights": np.zeros((n, len(ARKIT_NAMES)), np.float32),
        "head_pose": np.zeros((n, 6), np.float32),
        "camera/intrinsics": np.zeros((n, 3, 3), np.float32),
        "camera/extrinsics": np.zeros((n, 3, 4), np.float32),
        "rendered": np.zeros(n, bool),
    }
    rows: list[dict] = []
    if not job_identities:
        return ShardResult(arrays, rows, failures, seconds)

    started = time.perf_counter()
    job = {"out_dir": str(work_dir / "blender"), "resolution": res, "cycles_samples": config.cycles_samples,
           "cycles_device": config.cycles_device, "denoise": config.denoise, "seed": seed, "shape_key_names": list(ARKIT_NAMES),
           "identities": job_identities, "backgrounds": local_backgrounds(sources, work_dir)}
    job_path = work_dir / "job.json"
    job_path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    result = run_one_shot(job_path, config.timeout_seconds, script=SCENES_SCRIPT)
    seconds["render"] = time.perf_counter() - started

    started = time.perf_counter()
    images: dict[str, Path] = {}
    for (identity, draws, source, shape), job_identity, rendered in zip(kept, job_identities, result["identities"]):
        with np.load(rendered["scene"], allow_pickle=False) as scene:
            scene = {key: scene[key] for key in scene.files}
        rows_of = slice(identity.index * shard.samples_per_identity - shard.start,
                        (identity.index + 1) * shard.samples_per_identity - shard.start)
        camera_matrix = intrinsics(scene["lens_mm"], res)
        world_to_camera = extrinsics(scene["camera_world"])
        points = to_camera(scene["landmarks_world"], world_to_camera)
        pixels = project(points, camera_matrix)
        blender_pixels = np.stack([scene["camera_view"][..., 0] * res, (1.0 - scene["camera_view"][..., 1]) * res], -1)
        error = float(np.abs(pixels - blender_pixels).max())
        if error > PROJECTION_TOLERANCE_PX:
            raise LabelMismatch(f"our landmark projection is {error:.3g} px from Blender's for {identity.name}")
        inside = (pixels >= 0).all(-1) & (pixels < res).all(-1) & (points[..., 2] > 0)
        arrays["landmarks_2d"][rows_of] = pixels
        arrays["landmarks_3d"][rows_of] = points
        arrays["visible"][rows_of] = scene["visible"] & inside
        arrays["weights"][rows_of] = draws.weights
        arrays["head_pose"][rows_of] = draws.head_pose
        arrays["camera/intrinsics"][rows_of] = camera_matrix
        arrays["camera/extrinsics"][rows_of] = world_to_camera
        arrays["rendered"][rows_of] = True
        for j, name in enumerate(job_identity["names"]):
            row = rows_of.start + j
            exr = Path(job["out_dir"]) / "passes" / f"{name}.exr"
            depth, normals, segmentation = read_passes(exr, world_to_camera[j])
            behind = segmentation == CLASS_ID["background"]  # a backdrop is not the head: no depth there
            depth[behind], normals[behind] = 0.0, 0.0
            arrays["depth"][row], arrays["normals"][row], arrays["segmentation"][row] = depth, normals, segmentation
            images[f"{name}.png"] = Path(job["out_dir"]) / "images" / f"{name}.png"
            yaw, pitch = head_angles_to_camera(euler_xyz(*draws.head_pose[j, :3]), world_to_camera[j])
            emotion = int(draws.emotion[j])
            rows.append({
                "sample": shard.start + row, "image": f"images/{name}.png", "identity": identity.name,
                "split": identity.split, "yaw_deg": float(yaw), "pitch_deg": float(pitch),
                "emotion": EMOTIONS[emotion] if emotion >= 0 else None,
                "visible_landmarks": int(arrays["visible"][row].sum()), "source": source,
                "shape": [] if shape is None else [round(float(c), 4) for c in shape],
            })
    seconds["labels"] = time.perf_counter() - started
    return ShardResult(arrays, rows, failures, seconds, images)
