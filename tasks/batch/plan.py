"""Turn a read manifest and its validation errors into a run plan (pure; no IO)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stores.location import DataLocation, is_url
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
    plan_seconds: float = 0.0
    """Time spent planning (checks, fingerprints, store groups), before any row's first task."""
    pending: list[AvatarRow] = field(default_factory=list)
    reused: list[AvatarRow] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    """Rows that failed before any stage ran: the manifest checks, or ingest's checks on the input
    files (missing, outside the input roots, empty, too large, not an image)."""


def run_name(manifest: str | os.PathLike | DataLocation, preset: str) -> str:
    """One run per manifest file (a local path or a URL) and preset, so a re-run (or a fixed
    manifest) finds its completed avatars."""
    text = manifest.url if isinstance(manifest, DataLocation) else os.fspath(manifest)
    if is_url(text):
        where = DataLocation(text).url  # one spelling per object: no trailing slash
        stem = PurePosixPath(where.partition("://")[2]).stem
    else:  # the absolute path, as always: existing stores hold runs under these names
        path = Path(text)
        where, stem = str(path.resolve()), path.stem
    digest = hashlib.sha256(f"{where}\0{preset}".encode("utf-8")).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "manifest"
    return f"{stem[:40]}-{digest}"


def models_needed(row: AvatarRow) -> tuple[str, ...]:
    """Registered models a row's stages load."""
    if row.generate_seed is not None:
        return (GAN_MODEL, DIFFUSION_MODEL)
    return (DIFFUSION_MODEL,) if row.refine else ()


def row_fingerprint(row: AvatarRow, manifest_dir: str | os.PathLike, settings_json: str,
                    model_versions: dict[str, int | None] | None = None) -> str:
    """What an avatar's outputs depend on: its row, the settings, its input files' size and mtime
    (size and ETag or mtime for a URL), and the production versions of the models it uses. A
    completed avatar is reused only while this stays the same."""
    values = {k: v for k, v in row.to_dict().items() if k != "line"}
    files = []
    for value in (row.portrait, row.audio, row.video, row.style_name):
        if value:
            files.append([value, *_input_signature(value, manifest_dir)])
    versions = {name: (model_versions or {}).get(name) for name in models_needed(row)}
    payload = json.dumps([values, files, settings_json, versions], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _input_signature(value: str, manifest_dir: str | os.PathLike) -> tuple:
    """(size, version) of one input; (None, None) when it cannot be read (ingest reports why).
    A relative path lies beside the manifest, which may itself be a folder URL."""
    local = value.removeprefix("file://")
    try:
        if is_url(value):
            return DataLocation(value).signature()
        if is_url(manifest_dir) and not Path(local).is_absolute():
            return DataLocation(manifest_dir).join(local).signature()
        stat = (Path(manifest_dir) / local).stat()
        return stat.st_size, stat.st_mtime_ns
    except (OSError, ValueError):
        return None, None


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
