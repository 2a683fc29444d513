"""Shared test fixtures: sample paths and quiet, isolated Prefect/MLflow settings."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"

for key, value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(key, value)


def sample(*parts: str) -> Path:
    path = SAMPLES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared sample {'/'.join(parts)} is not available")
    return path


def link_training_faces(folder: Path, per_label: int) -> Path:
    """A training folder of symlinks: the first `per_label` faces of each label of faces128."""
    faces = SAMPLES.parent / "faces128"
    if not faces.is_dir():
        pytest.skip("shared faces128 is not available")
    folder.mkdir()
    taken: dict[str, int] = {}
    for path in sorted(faces.glob("*.jpg")):
        label = "_".join(path.name.split("_")[:2])
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            os.symlink(path, folder / path.name)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path_factory, monkeypatch):
    # Prefect result caches would otherwise leak between runs.
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp_path_factory.mktemp("prefect-results")))


def _single_threaded_torch() -> None:
    # Tests share 2 cores with Blender and MediaPipe subprocesses; OpenMP threads that spin on a
    # busy core slow torch down several-fold, one thread never does.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


_single_threaded_torch()
