"""Run `avatarflow produce` for a benchmark and stop the Prefect server it started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_produce(manifest: Path, data_dir: Path, prefect_port: int, input_roots) -> int:
    """The command's exit code; its output goes to this terminal, as progress."""
    from infra.prefect_server import stop_server

    command = [sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir", str(data_dir),
               "--prefect-port", str(prefect_port), *[a for root in input_roots for a in ("--input-root", root)]]
    try:
        code = subprocess.run(command, cwd=REPO).returncode
    finally:
        stop_server(data_dir / "prefect")
    if code != 0:
        print(f"produce exited with {code}")
    return code
