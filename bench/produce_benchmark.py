"""Run `avatarflow produce` on the sample manifest in a fresh data dir and print per-stage seconds,
the real-time factor (seconds of video per second of wall) and the peak RSS of the process tree.

    python bench/produce_benchmark.py [--preset photo|lit] [--resolution 512]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> int:
    from avatarflow.samples import write_sample_manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="photo")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1,
                        help="copies of each sample row (new ids), to see the batch's steady state")
    parser.add_argument("--data-dir", type=Path, help="default: a new temporary folder")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="avatarflow-bench-"))
    manifest, roots = write_sample_manifest(data_dir / "sample")
    with manifest.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0].keys(), "resolution"])
        writer.writeheader()
        for copy in range(args.repeat):
            for row in rows:
                row_id = row["id"] if copy == 0 else f"{row['id']}-{copy}"
                writer.writerow({**row, "id": row_id, "resolution": args.resolution})

    command = [sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir", str(data_dir),
               "--preset", args.preset, *[a for root in roots for a in ("--input-root", root)]]
    started = time.time()
    child = subprocess.Popen(command, cwd=REPO)
    watched = psutil.Process(child.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(watched))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    stop.set()
    sampler.join()
    wall = time.time() - started
    if code != 0:
        print(f"produce exited with {code}")
        return code
    summary = json.loads(next((data_dir / "outputs").glob("*/summary.json")).read_text())
    print("\n=== benchmark ===")
    print(f"preset {args.preset}, resolution {args.resolution}, avatars {len(summary['finished'])}, "
          f"quarantined {len(summary['failed'])}")
    for stage, seconds in summary["stage_seconds"].items():
        print(f"  {stage:<12} {seconds:8.2f} s")
    print(f"  video        {summary['video_seconds']:8.2f} s")
    print(f"  flow wall    {summary['wall_seconds']:8.2f} s -> {summary['realtime_factor']:.2f}x real time")
    print(f"  command wall {wall:8.2f} s (server start, cluster start and imports included) -> "
          f"{summary['video_seconds'] / wall:.2f}x real time")
    print(f"  peak RSS of the process tree {peak / 2**30:.2f} GiB")
    print(f"  outputs {summary['output_folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
