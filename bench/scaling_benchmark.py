"""Scaling from 1 to 2 Dask workers on one manifest, and the orchestration overhead of each run.

    python bench/scaling_benchmark.py [--rows 6] [--resolution 256] [--workers 1 2]

Each worker count runs `avatarflow produce` on the same manifest in a fresh data dir (nothing
reused). Printed per run: the flow's wall time (plan to publish), the sum of stage task seconds,
the longest chain of one avatar's stages (ingest → max(reconstruct [→ style], animate) → render),
and the overhead: wall − max(longest chain, total task seconds / workers), also as a share of the
wall. Then the scaling efficiency T(1) / (n × T(n)).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCRIPTS = [
    "Good morning. Today we look at the weather across the country.",
    "Please remember to bring your badge to the building tomorrow.",
    "The quick brown fox jumps over the lazy dog, twice.",
    "Numbers matter: seven, eleven, and forty-two are all here.",
    "Thank you for watching, and see you again next week.",
    "A calm voice, a steady face, and a short message.",
]


def chain_seconds(stages: dict[str, dict]) -> float:
    """Critical path through one avatar's stages (identity and style run in line with reconstruct)."""
    seconds = {name: info.get("seconds", 0.0) for name, info in stages.items()}
    face = seconds.get("generate", 0.0) + seconds.get("refine", 0.0) + seconds.get("reconstruct", 0.0) + seconds.get("style", 0.0)
    return seconds.get("ingest", 0.0) + max(face, seconds.get("animate", 0.0)) + seconds.get("render", 0.0)


def run_once(manifest: Path, workers: int, port: int) -> dict:
    import zarr

    data_dir = Path(tempfile.mkdtemp(prefix=f"avatarflow-scaling-{workers}-"))
    command = [sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir", str(data_dir),
               "--profile", "local", "--workers", str(workers), "--prefect-port", str(port)]
    started = time.time()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    command_wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    summary = json.loads(next((data_dir / "outputs").glob("*/summary.json")).read_text())
    store = zarr.open_group(str(data_dir / "avatars.zarr"), mode="r")
    chains, total = [], 0.0
    for avatar in summary["finished"]:
        stages = dict(store[f"runs/{summary['run']}/{avatar}"].attrs)["stages"]
        chains.append(chain_seconds(stages))
        total += sum(info.get("seconds", 0.0) for info in stages.values())
    wall = summary["wall_seconds"]
    bound = max(max(chains), total / workers)
    return {"workers": workers, "wall": wall, "command_wall": command_wall, "task_total": total,
            "longest_chain": max(chains), "overhead": wall - bound, "overhead_share": (wall - bound) / wall,
            "video_seconds": summary["video_seconds"], "finished": len(summary["finished"])}


def main() -> int:
    from PIL import Image
    from skimage import data

    from infra.prefect_server import ensure_server, stop_server
    from tests.conftest import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="avatarflow-scaling-"))
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    manifest = folder / "manifest.csv"
    lines = ["id,portrait,text,resolution"]
    lines += [f"row{i},astronaut.png,{SCRIPTS[i % len(SCRIPTS)].replace(',', '')},{args.resolution}" for i in range(args.rows)]
    manifest.write_text("\n".join(lines) + "\n")

    # One Prefect server for every run, started before timing, so runs differ only in workers.
    port = free_port()
    ensure_server(folder / "prefect", port=port)
    try:
        results = [run_once(manifest, workers, port) for workers in args.workers]
    finally:
        stop_server(folder / "prefect")

    print(f"{args.rows} rows at {args.resolution}², photo preset")
    print(f"{'workers':>7} {'wall s':>8} {'tasks s':>8} {'chain s':>8} {'overhead s':>10} {'share':>6} {'x real time':>11}")
    for r in results:
        print(f"{r['workers']:>7} {r['wall']:8.1f} {r['task_total']:8.1f} {r['longest_chain']:8.1f} "
              f"{r['overhead']:10.1f} {r['overhead_share']:6.0%} {r['video_seconds'] / r['wall']:11.2f}")
    base = results[0]
    for r in results[1:]:
        speedup = base["wall"] / r["wall"]
        print(f"scaling {base['workers']} → {r['workers']} workers: speed-up {speedup:.2f}x, "
              f"efficiency {speedup * base['workers'] / r['workers']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
