"""Turn a read manifest and its validation errors into a run plan (pure; no IO)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from stores.model_registry import DIFFUSION_MODEL, GAN_MODEL
from tasks.common.rows import AvatarRow


@dataclass
class RunPlan:
    """What a produce run will do: which rows to build, which to reuse, which are quarantined."""

    run: str
    store_url: str
    data_dir: str
    manifest_dir: str
    manifest_sha256: str
    started_at: float
    pending: list[AvatarRow] = field(default_factory=list)
    reused: list[AvatarRow] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)


def run_name(manifest_path: Path, preset: str) -> str:
    """One run per manifest file and preset, so a re-run (or a fixed manifest) finds its completed avatars."""
    digest = hashlib.sha256(f"{manifest_path.resolve()}\0{preset}".encode("utf-8")).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", manifest_path.stem).strip("-") or "manifest"
    return f"{stem[:40]}-{digest}"


def models_needed(row: AvatarRow) -> tuple[str, ...]:
    """Registered models a row's stages load."""
    if row.generate_seed is not None:
        return (GAN_MODEL, DIFFUSION_MODEL)
    return (DIFFUSION_MODEL,) if row.refine else ()


def row_fingerprint(row: AvatarRow, manifest_dir: Path, settings_json: str,
                    model_versions: dict[str, int | None] | None = None) -> str:
    """What an avatar's outputs depend on: its row, the settings, its input files' size and mtime,
    and the production versions of the models it uses. A completed avatar is reused only while
    this stays the same."""
    values = {k: v for k, v in row.to_dict().items() if k != "line"}
    files = []
    for value in (row.portrait, row.audio, row.style_name):
        if value:
            path = manifest_dir / value
            try:
                stat = path.stat()
                files.append([value, stat.st_size, stat.st_mtime_ns])
            except (OSError, ValueError):
                files.append([value, None, None])
    versions = {name: (model_versions or {}).get(name) for name in models_needed(row)}
    payload = json.dumps([values, files, settings_json, versions], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def split_rows(
    rows: list[dict], line_numbers: list[int], errors: dict[int, str], default_language: str
) -> tuple[list[AvatarRow], list[dict]]:
    """Valid rows become AvatarRows; invalid ones become quarantine entries (stage "manifest")."""
    valid, quarantined = [], []
    for index, values in enumerate(rows):
        line = line_numbers[index]
        if index in errors:
            quarantined.append({"line": line, "id": values.get("id") or "", "stage": "manifest", "error": errors[index]})
            continue
        valid.append(AvatarRow.from_manifest(values, line, default_language))
    return valid, quarantined
