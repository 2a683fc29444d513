"""Throughput, scaling and MediaPipe agreement of `avatarflow synthesize`.

    python bench/synthesize_benchmark.py [--identities 8] [--samples-per-identity 4] [--resolution 512]
                                         [--portraits FOLDER] [--workers 1 2] [--keep DIR]

Each worker count renders the same data set (same seed) into a fresh data dir through the
`avatarflow` command. Printed per run: images, the flow's wall time, images per hour and per hour
per core, and the worker seconds per image. Then the scaling efficiency T(1) / (n × T(n)), and on
the last run's renders MediaPipe's detection rate for |yaw| <= 45° and its mean landmark error over
the ground truth's inter-ocular distance for |yaw| <= 30° (misses listed apart), against a trivial
answer: another image's ground-truth landmarks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_once(portraits: Path, data_dir: Path, workers: int, args: argparse.Namespace) -> dict:
    import zarr

    from tests.conftest import free_port
    from infra.prefect_server import stop_server

    command = [sys.executable, "-m", "avatarflow.cli", "synthesize", "--portraits", str(portraits),
               "--samples-per-identity", str(args.samples_per_identity), "--resolution", str(args.resolution),
               "--data-dir", str(data_dir), "--profile", "local", "--workers", str(workers), "--seed", "1",
               "--prefect-port", str(free_port())]
    if args.identities:
        command += ["--identities", str(args.identities)]
    started = time.time()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    finally:
        stop_server(data_dir / "prefect")
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    summary = dict(zarr.open_group(data_dir / "synthetic" / "faces" / "labels.zarr", mode="r").attrs)["summary"]
    summary["command_seconds"] = time.time() - started
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portraits", type=Path, default=REPO.parent / "shared" / "samples" / "portraits")
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--samples-per-identity", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, help="write the data sets under this folder and keep them")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    root = args.keep or Path(tempfile.mkdtemp(prefix="avatarflow-synthesize-"))
    results = {}
    for workers in args.workers:
        summary = run_once(args.portraits, root / f"workers{workers}", workers, args)
        results[workers] = summary
        rate = summary["images"] / summary["wall_seconds"] * 3600
        print(f"workers {workers}: {summary['images']} images at {args.resolution}² in {summary['wall_seconds']:.1f} s "
              f"flow wall ({summary['command_seconds']:.1f} s command): {rate:.0f} images/hour, "
              f"{rate / cores:.0f} images/hour/core; {summary['render_seconds'] / summary['images']:.2f} worker s/image",
              flush=True)
    if 1 in results and len(results) > 1:
        for workers, summary in results.items():
            if workers > 1:
                efficiency = results[1]["wall_seconds"] / (workers * summary["wall_seconds"])
                print(f"scaling 1 -> {workers} workers: efficiency {efficiency:.2f} (same {cores} cores; "
                      f"1 worker runs Cycles on {cores} threads, {workers} on {max(1, cores // workers)} each)")
    agreement_of(root / f"workers{args.workers[-1]}" / "synthetic" / "faces")


def agreement_of(dataset: Path) -> None:
    import numpy as np

    from stores.synthetic_store import SyntheticStore
    from tasks.synthesize.checks import OUTER_EYE_CORNERS, landmark_agreement

    store = SyntheticStore(dataset)
    index = store.index()
    wide = landmark_agreement(store, index, max_abs_yaw=45.0)
    near = wide[wide["yaw_deg"].abs() <= 30.0]
    labels = store.labels()
    baseline = []
    for sample in near["sample"]:
        truth = labels["landmarks_2d"][int(sample)]
        other = labels["landmarks_2d"][(int(sample) + len(index) // 2) % len(index)]
        iod = np.linalg.norm(truth[OUTER_EYE_CORNERS[0]] - truth[OUTER_EYE_CORNERS[1]])
        baseline.append(np.linalg.norm(truth - other, axis=1).mean() / iod)
    found = near[near["face_found"]]
    print(f"MediaPipe finds a face in {wide['face_found'].mean():.0%} of {len(wide)} renders with |yaw| <= 45 "
          f"(missed: samples {list(wide.loc[~wide['face_found'], 'sample'])})")
    print(f"|yaw| <= 30: {len(near)} renders, {len(found)} found; landmark error / inter-ocular distance "
          f"mean {found['error_iod'].mean():.3f}, median {found['error_iod'].median():.3f}, "
          f"max {found['error_iod'].max():.3f}; another image's landmarks: mean {np.mean(baseline):.3f}")


if __name__ == "__main__":
    main()
