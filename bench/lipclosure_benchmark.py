"""Render speech rows through `avatarflow produce` and print how the lips close on /p b m/, per clip and
pooled per motion source, with the held-out lip-closure oracle when it is present.

    python bench/lipclosure_benchmark.py --audio a.wav --audio b.wav [--transcripts transcripts.json]
        [--tts "A sentence to speak."] [--resolution 256] [--data-dir DIR] [--prefect-port N]

Each `--audio` clip becomes a row without a transcript, and, when the transcripts JSON ({file name: text})
has its text, a second row with it. Each `--tts` text becomes a text row. `--language` sets the rows'
language (other languages take the audio-feature path). Groups: tts, transcript, no-transcript.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.produce_run import run_produce  # noqa: E402

SHARED = REPO.parent / "shared"
# Shared portraits whose lips are closed in the photo, so the rest frame is a closed mouth.
DEFAULT_PORTRAITS = ("sfhq_pt1_00000161.jpg", "sfhq_pt2_00001286.jpg", "sfhq_pt2_00003040.jpg",
                     "sfhq_pt1_00001762.jpg", "sfhq_pt2_00000137.jpg", "sfhq_pt2_00001264.jpg")


def build_rows(args: argparse.Namespace) -> list[dict]:
    transcripts = json.loads(args.transcripts.read_text(encoding="utf-8")) if args.transcripts else {}
    portraits = [str(Path(p).resolve()) for p in args.portrait] or \
        [str(SHARED / "samples" / "portraits" / name) for name in DEFAULT_PORTRAITS]
    rows: list[dict] = []

    def add(group: str, **values) -> None:
        portrait = portraits[len(rows) % len(portraits)]
        rows.append({"group": group, "id": f"{group}-{len(rows)}", "portrait": portrait,
                     "language": args.language, "resolution": args.resolution, **values})

    for audio in args.audio:
        path = str(Path(audio).resolve())
        add("no-transcript", audio=path)
        if Path(audio).name in transcripts:
            add("transcript", audio=path, transcript=transcripts[Path(audio).name])
    for text in args.tts:
        add("tts", text=text)
    return rows


def write_manifest(rows: list[dict], folder: Path) -> Path:
    manifest = folder / "manifest.csv"
    columns = ["id", "portrait", "text", "audio", "transcript", "language", "resolution"]
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def oracle_python(args: argparse.Namespace) -> str | None:
    if args.oracle_python:
        return args.oracle_python
    setup = args.oracle.parent / "setup.sh"
    if not args.oracle.exists() or not setup.exists():
        return None
    done = subprocess.run(["bash", str(setup)], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else None


def run_oracle(python: str, oracle: Path, videos: list[Path]) -> list[dict]:
    done = subprocess.run([python, str(oracle), *map(str, videos), "--json"], capture_output=True, text=True)
    results = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            results.append(json.loads(line))
    if done.returncode != 0:
        print(f"oracle exited with {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return results


def motion_sources(data_dir: Path, rows: list[dict]) -> dict[str, str]:
    """The `animation/` source each finished row recorded in the store."""
    import zarr

    sources = {}
    store = data_dir / "avatars.zarr"
    if not store.exists():
        return sources
    root = zarr.open_group(str(store), mode="r")
    for run in root["runs"].group_keys():
        for row in rows:
            try:
                sources[row["id"]] = root[f"runs/{run}/{row['id']}/animation"].attrs.get("source", "?")
            except KeyError:
                continue
    return sources


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", action="append", default=[], help="speech recording (repeatable)")
    parser.add_argument("--transcripts", type=Path, help="JSON {audio file name: transcript}")
    parser.add_argument("--tts", action="append", default=[], help="text to speak with espeak-ng (repeatable)")
    parser.add_argument("--portrait", action="append", default=[], help="portrait(s) to cycle through")
    parser.add_argument("--language", default="en")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--data-dir", type=Path, help="data dir (default: a fresh temporary one)")
    parser.add_argument("--prefect-port", type=int, default=4290)
    parser.add_argument("--oracle", type=Path, default=SHARED / "oracles" / "lipclosure.py")
    parser.add_argument("--oracle-python", help="python that runs the oracle (default: its setup.sh prints one)")
    args = parser.parse_args()

    rows = build_rows(args)
    if not rows:
        parser.error("give at least one --audio or --tts")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="lipclosure-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(rows, data_dir)
    roots = sorted({str(Path(r[k]).parent) for r in rows for k in ("portrait", "audio") if r.get(k)})
    run_produce(manifest, data_dir, args.prefect_port, roots)
    sources = motion_sources(data_dir, rows)
    videos = {row["id"]: next(iter(sorted((data_dir / "outputs").glob(f"*/{row['id']}/talk.mp4"))), None)
              for row in rows}
    python = oracle_python(args)
    print("\n=== lip closure on /p b m/ (lower is better; real speakers pool 0.19, a frozen mouth 1.0) ===")
    if python is None:
        print("oracle not found; videos:")
        for row_id, video in videos.items():
            print(f"  {row_id}: {video} source={sources.get(row_id)}")
        return 0
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    for group, members in groups.items():
        rendered = [row for row in members if videos[row["id"]] is not None]
        if not rendered:
            print(f"{group}: nothing rendered")
            continue
        results = run_oracle(python, args.oracle, [videos[row["id"]] for row in rendered])
        for row, result in zip(rendered, results):
            clip = Path(row.get("audio") or "tts").name
            print(f"  {group:<14} {row['id']:<18} {clip:<28} source={sources.get(row['id'], '?'):<8} "
                  f"closure={result.get('closure')} n_bilabial={result.get('n_bilabial')} "
                  f"words={result.get('words', '')!r}")
        if len(results) > len(rendered):
            pooled = results[-1]
            print(f"  {group:<14} POOLED closure={pooled.get('closure')} n_bilabial={pooled.get('n_bilabial')} "
                  f"bilabial_closed_share={pooled.get('bilabial_closed_share')}")
    print(f"outputs in {data_dir / 'outputs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
