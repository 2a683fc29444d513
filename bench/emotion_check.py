"""Render one portrait speaking one script in every emotion through `avatarflow produce`, and print what
MediaPipe sees on the MP4s: mouth-corner lift and brow lift against neutral, the inner-lip gap at /p b m/
and at open vowels, and, when the held-out oracles are set up, their lip-closure figure per clip.

    python bench/emotion_check.py [--portrait P.jpg] [--text "..."] [--resolution 256] [--data-dir DIR]
        [--emotions neutral,happy,...] [--prefect-port N]

Oracles: `PY=$(bash ../shared/oracles/setup.sh)` once; this script finds them through ORACLE_PYTHON
(default ~/.cache/avatarflow-oracles/bin/python) and skips them when absent.
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

SHARED = REPO.parent / "shared"
DEFAULT_TEXT = "Pam and Bob bought a map. Maybe mom came back."


def avatar_id(emotion: str) -> str:
    """A manifest id for an emotion spec (ids allow only letters, digits, '_' and '-')."""
    return emotion.replace(":", "-").replace("@", "-").replace(",", "_").replace(".", "p")


def main() -> None:
    from tasks.animate.emotion import EMOTIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--portrait", type=Path, default=SHARED / "samples" / "portraits" / "sfhq_pt1_00000161.jpg")
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--emotions", default=",".join(EMOTIONS))
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--prefect-port", type=int)
    args = parser.parse_args()

    import zarr

    from infra.prefect_server import stop_server
    from tasks.render.expression_metrics import measure_video
    from tests.conftest import free_port

    emotions = [e.strip() for e in args.emotions.split(",") if e.strip()]
    work = Path(tempfile.mkdtemp(prefix="emotion-check-"))
    data_dir = args.data_dir or work / "data"
    manifest = work / "emotions.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "portrait", "text", "resolution", "emotion"])
        for emotion in emotions:
            writer.writerow([avatar_id(emotion), str(args.portrait.resolve()), args.text, args.resolution, emotion])
    port = args.prefect_port or free_port()
    try:
        done = subprocess.run([sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir",
                               str(data_dir), "--prefect-port", str(port), "--input-root",
                               str(args.portrait.resolve().parent)], cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    finally:
        stop_server(data_dir / "prefect")
    summary = json.loads(next((Path(data_dir) / "outputs").glob("*/summary.json")).read_text())
    store = zarr.open_group(str(Path(data_dir) / "avatars.zarr"), mode="r")
    oracle_python = Path(os.environ.get("ORACLE_PYTHON", Path.home() / ".cache/avatarflow-oracles/bin/python"))
    oracle = SHARED / "oracles" / "lipclosure.py"

    rows = {}
    for avatar in [avatar_id(e) for e in emotions if avatar_id(e) in summary["finished"]]:
        group = store[f"runs/{summary['run']}/{avatar}"]
        phonemes = [(s, float(a), float(b)) for s, a, b in group["input/audio"].attrs["phonemes"]]
        video = Path(summary["output_folder"]) / avatar / "talk.mp4"
        figures = measure_video(video, phonemes)
        if oracle_python.exists() and oracle.exists():
            result = subprocess.run([str(oracle_python), str(oracle), str(video), "--text", args.text, "--json"],
                                    capture_output=True, text=True)
            lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
            if lines:
                oracle_figures = json.loads(lines[-1])
                figures["oracle_closure"] = oracle_figures.get("closure")
                figures["oracle_bilabial_closed_share"] = oracle_figures.get("bilabial_closed_share")
        rows[avatar] = figures

    base = rows.get("neutral")
    print(f"{'emotion':12s} {'corner':>8s} {'Δcorner':>8s} {'brow':>7s} {'Δbrow':>7s} {'gap pbm':>8s} "
          f"{'gap /a/':>8s} {'oracle':>7s} {'closed':>7s}")
    for avatar, f in rows.items():
        d_corner = f["corner_lift"] - base["corner_lift"] if base else float("nan")
        d_brow = f["brow_lift"] - base["brow_lift"] if base else float("nan")
        oracle_closure = f.get("oracle_closure")
        closed = f.get("oracle_bilabial_closed_share")
        print(f"{avatar:12s} {f['corner_lift']:8.4f} {d_corner:+8.4f} {f['brow_lift']:7.4f} {d_brow:+7.4f} "
              f"{f['bilabial_gap']:8.4f} {f['open_gap']:8.4f} "
              f"{'' if oracle_closure is None else f'{oracle_closure:7.3f}':>7s} "
              f"{'' if closed is None else f'{closed:7.2f}':>7s}")
    print(f"outputs: {summary['output_folder']}")


if __name__ == "__main__":
    main()
