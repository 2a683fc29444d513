"""Judge rendered talking videos as a viewer would: the share of frames in which MediaPipe finds a
face, and how the inner-lip gap follows the speech loudness.

    python bench/lipsync_check.py DATA_DIR/outputs/<run>
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

from tasks.render.lipsync_metrics import check  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a run's output folder, or one talk.mp4")
    args = parser.parse_args()
    videos = [args.folder] if args.folder.suffix == ".mp4" else sorted(args.folder.glob("*/talk.mp4"))
    for video in videos:
        result = check(video)
        print(f"{video.parent.name:>16}: " + "  ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
