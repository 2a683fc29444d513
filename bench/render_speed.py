"""Render speed of the Blender job: photo mode (Workbench -> H.264) and lit mode (Cycles) at 512^2.

    .venv/bin/python bench/render_speed.py [--photo-frames 50] [--lit-frames 3] [--lit-samples 16]

Prints seconds per frame and the multiple of real time at 25 fps. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.render.config import RenderConfig  # noqa: E402
from tasks.render.runner import run_blender_job, write_job  # noqa: E402
from tests.render_rig import make_animation, make_rig, make_texture  # noqa: E402

FPS = 25


def time_job(work_dir: Path, settings: RenderConfig, size: int, n_frames: int, cycles_device: str) -> dict:
    """Run one video-only job; returns its result with the process wall time added."""
    rig = make_rig(size, grid=33)  # about 850 vertices, near the MediaPipe mesh's 478 + mouth
    weights, head_pose = make_animation(n_frames, pose_from=n_frames // 2)
    job_path = write_job(work_dir, **rig, texture=make_texture(size), weights=weights, head_pose=head_pose,
                         settings=settings, fps=FPS, resolution=size, seed=0)
    job = json.loads(job_path.read_text())
    job["outputs"] = {"video": "frames.mp4"}  # time the video render alone
    job["cycles_device"] = cycles_device
    job_path.write_text(json.dumps(job))
    started = time.perf_counter()
    result = run_blender_job(job_path, timeout_s=3600)
    result["wall"] = time.perf_counter() - started
    return result


def report(name: str, result: dict, n_frames: int) -> None:
    per_frame = result["seconds"]["render"] / n_frames
    print(f"{name}: {n_frames} frames, build {result['seconds']['build']:.2f}s, "
          f"render {result['seconds']['render']:.2f}s = {per_frame:.3f} s/frame "
          f"({1.0 / (per_frame * FPS):.2f}x real time at {FPS} fps), process wall {result['wall']:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--photo-frames", type=int, default=50)
    parser.add_argument("--lit-frames", type=int, default=3)
    parser.add_argument("--lit-samples", type=int, default=16)
    parser.add_argument("--cycles-device", default="auto", choices=("auto", "cpu", "gpu"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.photo_frames > 0:
            photo = time_job(Path(tmp) / "photo", RenderConfig(mode="photo"), args.size, args.photo_frames, "cpu")
            report(f"photo {args.size}^2 Workbench", photo, args.photo_frames)
        if args.lit_frames > 0:
            lit = time_job(Path(tmp) / "lit", RenderConfig(mode="lit", cycles_samples=args.lit_samples),
                           args.size, args.lit_frames, args.cycles_device)
            log = (Path(tmp) / "lit" / "blender.log").read_text(errors="replace")
            device = "GPU" if "Cycles uses" in log else "CPU"
            report(f"lit {args.size}^2 Cycles {args.lit_samples} samples on {device}", lit, args.lit_frames)


if __name__ == "__main__":
    main()
