"""Big manifests through `avatarflow produce`: rows per second on a manifest whose rows all fail
ingest's file checks (missing, empty, not-an-image and outside-the-roots files, in turn; quarantined
while planning), on one whose rows all fail the manifest checks, and on one whose rows each run an
ingest task that fails (truncated PNGs: the header passes, decoding fails), with the flow process's
memory as the run goes. Prints figures; asserts nothing about speed.

    python -m bench.big_manifest_benchmark [--ingest-rows 10000] [--manifest-rows 100000] [--task-rows 500]
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_ingest_failures(folder: Path, rows: int) -> Path:
    """A manifest of `rows` rows that pass the manifest checks and all fail ingest's file checks."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is text, not an image\n")
    outside = folder.parent / "outside.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n")
    portraits = ["missing-{i}.png", "empty.png", "notes.png", str(outside)]
    manifest = folder / "ingest_failures.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "portrait", "text", "resolution"])
        for i in range(rows):
            writer.writerow([f"row{i:06d}", portraits[i % len(portraits)].format(i=i), "Hello.", "64"])
    return manifest


def write_task_failures(folder: Path, rows: int) -> Path:
    """A manifest of `rows` rows whose PNG header passes ingest's first checks but whose pixels are
    cut off, so each row runs (and fails) an ingest task."""
    import io

    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(encoded, "PNG")
    (folder / "cut.png").write_bytes(encoded.getvalue()[:200])
    manifest = folder / "task_failures.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "portrait", "text", "resolution"])
        for i in range(rows):
            writer.writerow([f"row{i:06d}", "cut.png", "Hello.", "64"])
    return manifest


def write_manifest_failures(folder: Path, rows: int) -> Path:
    """A manifest of `rows` rows that all fail the manifest checks (bad ids, fps, languages)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest_failures.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "portrait", "text", "fps", "language"])
        for i in range(rows):
            bad = i % 3
            writer.writerow([f"row {i}" if bad == 0 else f"row{i}", "face.png", "Hello.",
                             "500" if bad == 1 else "25", "!!" if bad == 2 else "en"])
    return manifest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def produce(manifest: Path, data_dir: Path, timeout_s: float = 1800) -> tuple[subprocess.CompletedProcess, float, list]:
    """Run the CLI on a fresh data dir; (its result, wall seconds, (seconds, MB) samples of the
    command's resident memory). Stops the server it started."""
    import psutil

    from infra.prefect_server import stop_server

    started = time.perf_counter()
    memory = []
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen([sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir",
                                    str(data_dir), "--prefect-port", str(free_port())],
                                   cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            watched = psutil.Process(process.pid)
            while process.poll() is None and time.perf_counter() - started < timeout_s:
                try:
                    memory.append((time.perf_counter() - started, watched.memory_info().rss / 1e6))
                except psutil.NoSuchProcess:
                    break
                time.sleep(1.0)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
            stop_server(data_dir / "prefect")
        out.seek(0)
        result = subprocess.CompletedProcess(process.args, process.returncode, out.read(), "")
    return result, time.perf_counter() - started, memory


def summary_of(data_dir: Path) -> dict:
    return json.loads(next((data_dir / "outputs").glob("*/summary.json")).read_text())


def measure(name: str, manifest: Path, rows: int, data_dir: Path) -> None:
    result, wall, memory = produce(manifest, data_dir)
    if result.returncode not in (0, 1):
        print(result.stdout[-4000:])
        raise SystemExit(f"{name}: produce exited with {result.returncode}")
    summary = summary_of(data_dir)
    stages = sorted({failure["stage"] for failure in summary["failed"]})
    print(f"{name}: {rows} rows, {len(summary['failed'])} quarantined (stages {', '.join(stages)}); "
          f"command {wall:.1f} s = {rows / wall:.1f} rows/s; run {summary['wall_seconds']:.1f} s = "
          f"{rows / summary['wall_seconds']:.1f} rows/s")
    quarter = max(1, len(memory) // 4)
    print(f"  command's memory (MB) every quarter of the run: "
          f"{', '.join(f'{mb:.0f}' for _, mb in memory[quarter - 1::quarter])}; peak {max(mb for _, mb in memory):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingest-rows", type=int, default=10_000)
    parser.add_argument("--manifest-rows", type=int, default=100_000)
    parser.add_argument("--task-rows", type=int, default=0, help="rows that each run a failing ingest task")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="big-manifest-") as work:
        work = Path(work)
        if args.ingest_rows:
            measure("fail at ingest", write_ingest_failures(work / "inputs", args.ingest_rows), args.ingest_rows,
                    work / "data-ingest")
        if args.manifest_rows:
            measure("fail the manifest checks", write_manifest_failures(work / "inputs", args.manifest_rows),
                    args.manifest_rows, work / "data-manifest")
        if args.task_rows:
            measure("fail in an ingest task", write_task_failures(work / "inputs", args.task_rows), args.task_rows,
                    work / "data-task")


if __name__ == "__main__":
    main()
