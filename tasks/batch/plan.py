"""Turn a read manifest and its validation errors into a run plan (pure; no IO)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

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


def run_name(manifest_stem: str, manifest_bytes: bytes, settings_json: str) -> str:
    """Same manifest and settings → same run, so a re-run finds its completed avatars."""
    digest = hashlib.sha256(manifest_bytes + b"\0" + settings_json.encode("utf-8")).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", manifest_stem).strip("-") or "manifest"
    return f"{stem[:40]}-{digest}"


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
