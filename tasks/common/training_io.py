"""What both training tasks do around their loops: threads, checkpoints, MLflow logging of
configs, sample grids and metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stores.location import DataLocation


def use_threads(threads: int | None) -> int:
    """Set torch's CPU threads (Dask workers start with OMP_NUM_THREADS=1); None = all cores."""
    count = max(1, threads or os.cpu_count() or 1)
    torch.set_num_threads(count)
    return count


def flat_params(prefix: str, config: Any) -> dict[str, str]:
    """A config dataclass as flat MLflow params: prefix.field → value."""
    return {f"{prefix}.{key}": json.dumps(value, default=str) for key, value in dataclasses.asdict(config).items()}


NOT_TRAINING_FIELDS = ("max_seconds", "micro_batch_size")
"""Config fields that change neither the training nor its result: the wall-clock cap (a run it cut
short resumes under a longer one), how a step's batch is split to bound memory, and the promotion
gates (`gate_*`, judged after training)."""


def checkpoint_path(data_dir: str | os.PathLike, model: str, dataset_fingerprint: str, config: Any) -> DataLocation:
    """One checkpoint per model, dataset and training settings: a rerun with the same three resumes it."""
    settings = {key: value for key, value in dataclasses.asdict(config).items()
                if key not in NOT_TRAINING_FIELDS and not key.startswith("gate_")}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return DataLocation(data_dir).join("training", model, f"{dataset_fingerprint}-{key}", "checkpoint.pt")


def save_checkpoint(location: DataLocation, state: dict) -> None:
    """Written whole and then put in place (renamed locally), so a killed run never leaves half a
    checkpoint."""
    with tempfile.TemporaryDirectory(prefix="avatarflow-checkpoint-") as folder:
        written = Path(folder) / "checkpoint.pt"
        torch.save(state, written)
        location.put_file(written)


def load_checkpoint(location: DataLocation) -> dict | None:
    if not location.exists():
        return None
    with location.local_copy() as local:
        # weights_only: tensors, numbers and dicts only; nothing is unpickled.
        return torch.load(local, map_location="cpu", weights_only=True)


def log_image(tracker, image_u8: np.ndarray, artifact_dir: str, file_name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / file_name
        Image.fromarray(image_u8).save(path)
        tracker.log_artifact(path, artifact_dir)
