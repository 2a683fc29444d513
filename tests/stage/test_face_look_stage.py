"""The mouth interior and the eyes on a real portrait: reconstruct it, render a few frames in Blender
(photo mode), and judge them with MediaPipe, as a viewer would: the open mouth reads as lit, gaze
moves the irises, a blink closes the lids, and the rest frame is still the photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.common.arkit import ARKIT_NAMES, INDEX
from tasks.reconstruct.config import ReconstructConfig
from tasks.reconstruct.landmarks import detect_faces
from tasks.reconstruct.mouth import LUMA, inside_polygon
from tasks.reconstruct.rig import reconstruct
from tasks.reconstruct.topology import face_topology
from tasks.render.config import RenderConfig
from tasks.render.runner import run_blender_job, write_job

PORTRAIT = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples" / "portraits" / "sfhq_pt1_00000161.jpg"
SIZE = 256
FRAMES = ({}, {"jawOpen": 0.7},
          {"eyeLookOutLeft": 1.0, "eyeLookInRight": 1.0},   # both eyes toward image right
          {"eyeLookInLeft": 1.0, "eyeLookOutRight": 1.0},   # both eyes toward image left
          {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0})
REST, OPEN, LOOK_RIGHT, LOOK_LEFT, BLINK = range(len(FRAMES))
# MediaPipe eye landmarks: (outer corner, inner corner, upper lid, lower lid, iris centre)
EYES = {"right": (33, 133, 159, 145, 468), "left": (263, 362, 386, 374, 473)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if not PORTRAIT.is_file():
        pytest.skip(f"sample portrait missing: {PORTRAIT}")
    rig = reconstruct(np.asarray(Image.open(PORTRAIT).convert("RGB")), SIZE, ReconstructConfig())
    weights = np.zeros((len(FRAMES), len(ARKIT_NAMES)), np.float32)
    for frame, values in enumerate(FRAMES):
        for name, value in values.items():
            weights[frame, INDEX[name]] = value
    job_dir = tmp_path_factory.mktemp("face-look")
    settings = RenderConfig(keep_frames=True, write_glb=False, write_blend=False)
    job = write_job(job_dir, **rig.arrays(), texture=rig.texture, weights=weights,
                    head_pose=np.zeros((len(FRAMES), 6), np.float32), settings=settings, fps=25,
                    resolution=SIZE, seed=0, poster_frame=1)
    result = run_blender_job(job, timeout_s=300)
    frames = [np.asarray(Image.open(Path(result["paths"]["frames_dir"]) / f"frame_{i:04d}.png").convert("RGB"))
              for i in range(1, len(FRAMES) + 1)]
    landmarks = []
    for frame in frames:
        found = detect_faces(frame)
        assert found, "MediaPipe finds no face on a rendered frame"
        landmarks.append(found[0][:, :2].astype(np.float64))
    return {"rig": rig, "frames": frames, "landmarks": landmarks}


def test_rest_frame_is_the_photo_outside_the_closed_lips(rendered):
    """Pixel-exact, eyes included; only the lips' hairline gap may show the mouth behind it."""
    photo = rendered["rig"].texture[:SIZE]
    differs = np.any(rendered["frames"][REST] != photo, axis=2)
    rows, cols = np.nonzero(differs)
    lips = rendered["rig"].landmarks_px[face_topology().lips_inner_loop, :2]
    near_lips = np.array([np.abs(lips - [c + 0.5, r + 0.5]).max(axis=1).min() <= 2.0 for r, c in zip(rows, cols)],
                         bool)
    assert near_lips.all(), f"{(~near_lips).sum()} pixels differ away from the lips"
    assert differs.sum() <= 10


def test_open_mouth_reads_as_lit(rendered):
    """Inside the inner lips that MediaPipe finds on the render: few near-black pixels, and red."""
    landmarks = rendered["landmarks"][OPEN]
    inter_ocular = np.linalg.norm(landmarks[33] - landmarks[263])
    assert np.linalg.norm(landmarks[13] - landmarks[14]) / inter_ocular > 0.12  # open, as the oracle counts it
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    inside = inside_polygon(centres, landmarks[face_topology().lips_inner_loop])
    pixels = rendered["frames"][OPEN].reshape(-1, 3)[inside].astype(np.float64)
    assert len(pixels) > 100
    near_black = np.mean(pixels @ LUMA < 25)
    red = np.median((pixels[:, 0] - pixels[:, 1]) / 255)
    assert near_black < 0.15, near_black
    assert red >= 0.10, red


def iris_offset(landmarks, eye) -> float:
    """Iris centre's horizontal offset from the eye's centre, in eye widths."""
    outer, inner, _, _, iris = EYES[eye]
    width = np.linalg.norm(landmarks[outer] - landmarks[inner])
    return float((landmarks[iris, 0] - (landmarks[outer, 0] + landmarks[inner, 0]) / 2) / width)


def openness(landmarks, eye) -> float:
    """Lid gap over eye width."""
    outer, inner, upper, lower, _ = EYES[eye]
    width = np.linalg.norm(landmarks[outer] - landmarks[inner])
    return float(np.linalg.norm(landmarks[upper] - landmarks[lower]) / width)


@pytest.mark.parametrize("eye", sorted(EYES))
def test_gaze_moves_the_iris(rendered, eye):
    marks = rendered["landmarks"]
    rest, right, left = (iris_offset(marks[i], eye) for i in (REST, LOOK_RIGHT, LOOK_LEFT))
    assert right - rest > 0.06 and rest - left > 0.06
    assert right - left > 0.18


@pytest.mark.parametrize("eye", sorted(EYES))
def test_blink_still_closes_the_lids(rendered, eye):
    marks = rendered["landmarks"]
    rest, blink = openness(marks[REST], eye), openness(marks[BLINK], eye)
    assert rest > 0.25
    assert blink < 0.55 * rest and blink < 0.2
