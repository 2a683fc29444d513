"""Output files of a run: `<data>/outputs/<run>/<avatar>/` plus the run's reports."""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AVATAR_FILES = {"video": "talk.mp4", "glb": "avatar.glb", "blend": "avatar.blend", "poster": "poster.png"}


@dataclass(frozen=True)
class RunOutputs:
    """Paths of one run's output folder."""

    data_dir: Path
    run: str

    @property
    def folder(self) -> Path:
        return self.data_dir / "outputs" / self.run

    def avatar_folder(self, avatar: str) -> Path:
        return self.folder / avatar

    def avatar_file(self, avatar: str, kind: str) -> Path:
        return self.avatar_folder(avatar) / AVATAR_FILES[kind]

    @property
    def quarantine_csv(self) -> Path:
        return self.folder / "quarantine.csv"

    @property
    def report_html(self) -> Path:
        return self.folder / "report.html"

    @property
    def summary_json(self) -> Path:
        return self.folder / "summary.json"


def publish_file(source: Path, target: Path) -> Path:
    """Move a finished file into place atomically, so a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target


def write_quarantine(outputs: RunOutputs, failures: list[dict[str, Any]]) -> Path:
    """One line per failed row: manifest line, id, stage, error."""
    outputs.folder.mkdir(parents=True, exist_ok=True)
    with outputs.quarantine_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["line", "id", "stage", "error"])
        writer.writeheader()
        for failure in failures:
            writer.writerow({key: failure.get(key, "") for key in writer.fieldnames})
    return outputs.quarantine_csv


def write_summary(outputs: RunOutputs, summary: dict[str, Any]) -> Path:
    outputs.folder.mkdir(parents=True, exist_ok=True)
    outputs.summary_json.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return outputs.summary_json


def write_report(outputs: RunOutputs, avatars: list[dict[str, Any]], failures: list[dict[str, Any]]) -> Path:
    """A self-contained gallery: poster, video and downloads per avatar, then the quarantine table."""
    cards = []
    for avatar in avatars:
        name = html.escape(avatar["id"])
        timings = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in avatar.get("seconds", {}).items())
        warnings = "".join(f"<li>{html.escape(w)}</li>" for w in avatar.get("warnings", []))
        written = avatar.get("outputs", {})
        links = " · ".join(f'<a href="{name}/{AVATAR_FILES[kind]}">{label}</a>'
                           for kind, label in (("glb", "GLB"), ("blend", ".blend"), ("video", "MP4")) if kind in written)
        cards.append(
            f"""<figure><video controls preload="none" poster="{name}/poster.png" src="{name}/talk.mp4" width="256"></video>
<figcaption><b>{name}</b> {'(reused)' if avatar.get('reused') else ''}<br>
{links}<br>
<small>{html.escape(timings)}</small><ul>{warnings}</ul></figcaption></figure>"""
        )
    rows = "".join(
        f"<tr><td>{html.escape(str(f.get('line', '')))}</td><td>{html.escape(str(f.get('id', '')))}</td>"
        f"<td>{html.escape(str(f.get('stage', '')))}</td><td>{html.escape(str(f.get('error', '')))}</td></tr>"
        for f in failures
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>avatarflow run {html.escape(outputs.run)}</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:1em;vertical-align:top}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}</style></head><body>
<h1>Run {html.escape(outputs.run)}</h1><p>{len(avatars)} avatar(s) finished, {len(failures)} row(s) quarantined.</p>
{''.join(cards)}
<h2>Quarantine</h2><table><tr><th>line</th><th>id</th><th>stage</th><th>error</th></tr>{rows}</table>
</body></html>"""
    outputs.folder.mkdir(parents=True, exist_ok=True)
    outputs.report_html.write_text(page, encoding="utf-8")
    return outputs.report_html
