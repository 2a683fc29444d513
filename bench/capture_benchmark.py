"""Capture benchmark: how closely rendered avatars follow their driving videos, and capture speed.

For every video in the shared samples, and for 720p, HEVC and variable-frame-rate versions made
here with ffmpeg, it produces a video-only row (the portrait is the video's best frame) through
`avatarflow produce`, runs MediaPipe on the rendered MP4 and prints the Pearson r of the inner-lip
gap, eye openness, head yaw and pitch against the driver's. Beside them it prints how well MediaPipe
agrees with itself on that driver: the eye-openness r between the driver and another encoding of it
(the original for a converted version, the 720p one for the original), a ceiling no render can be
expected to pass. It then times capture (decode, track, solve) of each 720p version pinned to one
CPU core. Prints figures; asserts nothing.

    .venv/bin/python bench/capture_benchmark.py [--videos DIR] [--resolution 256] [--seconds 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VERSIONS = {
    "original": [],
    "720p": ["-vf", "scale=-2:720,pad=1280:720:(ow-iw)/2:0", "-c:v", "libx264", "-preset", "veryfast"],
    "hevc": ["-c:v", "libx265", "-x265-params", "log-level=error", "-tag:v", "hvc1"],
    # Every third frame dropped, timestamps kept: 40 and 80 ms steps at 25 fps.
    "vfr": ["-vf", "select='not(eq(mod(n\\,3)\\,2))'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "veryfast"],
}


def make_versions(video: Path, out: Path, seconds: float) -> dict[str, Path]:
    made = {}
    for name, args in VERSIONS.items():
        target = out / f"{video.stem}_{name}.mp4"
        trim = ["-t", str(seconds)] if seconds > 0 else []
        if not args and not trim:
            made[name] = video
            continue
        codec = args or ["-c:v", "libx264", "-preset", "veryfast"]
        subprocess.run(["ffmpeg", "-y", "-v", "error", *trim, "-i", str(video), *codec, "-c:a", "aac", str(target)],
                       check=True, timeout=600)
        made[name] = target
    return made


def produce(rows: list[tuple[str, Path]], work: Path, resolution: int) -> Path:
    from infra.prefect_server import stop_server
    from tests.conftest import free_port

    manifest = work / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "video", "resolution"])
        for row_id, path in rows:
            writer.writerow([row_id, str(path), str(resolution)])
    data = work / "data"
    roots = sorted({str(path.parent) for _, path in rows})
    args = [sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir", str(data),
            "--prefect-port", str(free_port())]
    for root in roots:
        args += ["--input-root", root]
    try:
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=7200)
    finally:
        stop_server(data / "prefect")
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    return Path(json.loads(next((data / "outputs").glob("*/summary.json")).read_text())["output_folder"])


def track(path: Path):
    from tasks.capture.config import CaptureConfig
    from tasks.capture.tracking import track_frames
    from tasks.capture.video import iter_frames

    config = CaptureConfig()
    return track_frames(iter_frames(path, path.name, config, 600.0, config.track_max_side), config)


def capture_speed(path: Path) -> dict:
    """Frames per second of decode + track + solve on one core (run in a child pinned to CPU 0): by the
    wall clock, and by the process's CPU time (what one free core would give on a shared machine)."""
    code = f"""
import os, json, time, numpy as np
from pathlib import Path
os.sched_setaffinity(0, {{0}})
from tasks.capture.config import CaptureConfig
from tasks.capture.solve import solve_capture
from tasks.capture.tracking import track_frames, usable_frames
from tasks.capture.video import iter_frames
from tasks.reconstruct.canonical_shape import load_canonical_shape
from tasks.reconstruct.rig import reconstruct
config = CaptureConfig()
path = Path({str(path)!r})
first = next(iter_frames(path, path.name, config, 600.0))
rig = reconstruct(first.rgb, 256)
start, cpu_start = time.perf_counter(), time.process_time()
tracked = track_frames(iter_frames(path, path.name, config, 600.0, config.track_max_side), config)
tracked_at = time.perf_counter()
valid = usable_frames(tracked.found, tracked.sharpness, config.blur_ratio)
solve_capture(tracked.landmarks, valid, tracked.times, rig.vertices[:478], rig.deltas[:, :478],
              int(round(tracked.times[-1] * 25)) + 1, 25.0, config)
done, cpu_done = time.perf_counter(), time.process_time()
n = len(tracked.times)
print(json.dumps({{"frames": n, "fps": n / (done - start), "cpu_fps": n / (cpu_done - cpu_start),
                  "track_fps": n / (tracked_at - start),
                  "solve_ms_per_frame": 1000 * (done - tracked_at) / n}}))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=REPO.parent / "shared" / "samples" / "video")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=0.0, help="use only the first seconds of each video (0: all)")
    parser.add_argument("--skip-render", action="store_true", help="only time capture")
    args = parser.parse_args()

    from tasks.capture.metrics import follow_correlations
    from tasks.capture.tracking import eye_openness
    from tasks.reconstruct.canonical_shape import load_canonical_shape

    videos = sorted(args.videos.glob("*.mp4"))
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as scratch:
        work = Path(scratch)
        versions = {video.stem: make_versions(video, work, args.seconds) for video in videos}
        if not args.skip_render:
            rows = [(f"{stem}_{name}", path) for stem, made in versions.items() for name, path in made.items()]
            started = time.perf_counter()
            folder = produce(rows, work, args.resolution)
            print(f"produced {len(rows)} rows at {args.resolution}² in {time.perf_counter() - started:.0f} s")
            reference = load_canonical_shape()
            print(f"{'row':28s} {'frames':>6s} {'lip r':>6s} {'eye r':>6s} {'yaw r':>6s} {'pitch r':>7s} "
                  f"{'yaw sd°':>7s} {'pitch sd°':>9s} {'eye sd':>7s} {'eye r, driver vs its copy':>26s}")
            tracked = {path: track(path) for _, path in rows}
            for stem, made in versions.items():
                for name, path in made.items():
                    row_id = f"{stem}_{name}"
                    rendered = folder / row_id / "talk.mp4"
                    if not rendered.exists():
                        print(f"{row_id:28s} not rendered")
                        continue
                    driver, render = tracked[path], track(rendered)
                    r = follow_correlations(driver.landmarks, driver.times, driver.found, render.landmarks,
                                            render.times, render.found, reference)
                    copy = tracked[made["720p" if name == "original" else "original"]]
                    ceiling = follow_correlations(copy.landmarks, copy.times, copy.found, driver.landmarks,
                                                  driver.times, driver.found, reference)
                    eye_sd = eye_openness(driver.landmarks[driver.found]).std()
                    print(f"{row_id:28s} {r['frames']:6d} {r['lip_gap']:6.3f} {r['eye_openness']:6.3f} "
                          f"{r['yaw']:6.3f} {r['pitch']:7.3f} {r['driver_yaw_std_deg']:7.2f} "
                          f"{r['driver_pitch_std_deg']:9.2f} {eye_sd:7.4f} {ceiling['eye_openness']:26.3f}")
        print("capture speed on one core (decode + track + solve), 720p versions:")
        for stem, made in versions.items():
            speed = capture_speed(made["720p"])
            if "error" in speed:
                print(f"  {stem}: {speed['error']}")
                continue
            print(f"  {stem}: {speed['frames']} frames, {speed['fps']:.1f} frames/s wall, "
                  f"{speed['cpu_fps']:.1f} frames per CPU second "
                  f"(tracking alone {speed['track_fps']:.1f}/s, solve {speed['solve_ms_per_frame']:.2f} ms/frame)")


if __name__ == "__main__":
    main()
