"""Render the shared portraits through `avatarflow produce` and print, per portrait, how the open mouth
looks (mouthlook oracle: near-black share and median R-G inside the inner lips), whether the face is
found and the mouth follows the voice (lipsync oracle), and the GLB's non-zero ARKit morphs (glbcheck).

    python bench/mouthlook_benchmark.py [--portrait P.jpg ...] [--resolution 256] [--text "..."]
        [--data-dir DIR] [--prefect-port N]

Targets of the mouth look on open-mouth frames of well-lit avatars: black < 0.15, red >= 0.10; the
lipsync oracle should find a face in >= 98% of frames, glbcheck >= 20 non-zero morphs.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.produce_run import run_produce  # noqa: E402

SHARED = REPO.parent / "shared"
ORACLES = SHARED / "oracles"
# Open vowels ("a" as in father, "o", "ow") keep the jaw wide open for many frames.
DEFAULT_TEXT = "Father saw a large dog on the road. Wow, how odd, all the cars are gone now."


def oracle_python(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    setup = ORACLES / "setup.sh"
    if not setup.exists():
        return None
    done = subprocess.run(["bash", str(setup)], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else None


def run(python: str, script: str, *args: str) -> str:
    done = subprocess.run([python, str(ORACLES / script), *args], capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else f"(exit {done.returncode})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portrait", action="append", default=[], help="portrait (default: every shared one)")
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--data-dir", type=Path, help="data dir (default: a fresh temporary one)")
    parser.add_argument("--prefect-port", type=int, default=4291)
    parser.add_argument("--oracle-python", help="python that runs the oracles (default: their setup.sh prints one)")
    args = parser.parse_args()

    portraits = [Path(p).resolve() for p in args.portrait] or sorted((SHARED / "samples" / "portraits").glob("*.jpg"))
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="mouthlook-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"id": re.sub(r"[^A-Za-z0-9_-]", "-", p.stem)[:64], "portrait": str(p), "text": args.text,
             "resolution": args.resolution} for p in portraits]
    manifest = data_dir / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "portrait", "text", "resolution"])
        writer.writeheader()
        writer.writerows(rows)
    roots = sorted({str(p.parent) for p in portraits})
    run_produce(manifest, data_dir, args.prefect_port, roots)

    python = oracle_python(args.oracle_python)
    print("\n=== mouth look (open-mouth frames; targets black < 0.15, red >= 0.10), lipsync, glbcheck ===")
    for row in rows:
        folder = next(iter(sorted((data_dir / "outputs").glob(f"*/{row['id']}"))), None)
        video = folder / "talk.mp4" if folder else None
        if video is None or not video.is_file():
            print(f"  {row['id']:<24} not rendered")
            continue
        if python is None:
            print(f"  {row['id']:<24} {video} (oracles not found)")
            continue
        line = run(python, "mouthlook.py", str(video))
        look = json.loads(line) if line.startswith("{") else {"error": line}
        sync = run(python, "lipsync.py", str(video))
        glb = run(python, "glbcheck.py", str(folder / "avatar.glb"))
        print(f"  {row['id']:<24} open_frames={look.get('open_frames')} black={look.get('black')} "
              f"red={look.get('red')} teeth={look.get('teeth')} lum={look.get('lum')} | {sync} | {glb}")
    print(f"outputs in {data_dir / 'outputs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
