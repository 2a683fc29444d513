"""Output files of a run: `<data>/outputs/<run>/<avatar>/` plus the run's reports, under a local
data dir or a data dir URL alike."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from stores.location import DataLocation
from stores.report import render_report_html

AVATAR_FILES = {"video": "talk.mp4", "glb": "avatar.glb", "blend": "avatar.blend", "poster": "poster.png"}


@dataclass(frozen=True, init=False)
class RunOutputs:
    """Locations in one run's output folder; `data_dir` is a local path or a URL."""

    data_dir: DataLocation
    run: str

    def __init__(self, data_dir: str | os.PathLike | DataLocation, run: str):
        object.__setattr__(self, "data_dir", DataLocation(data_dir))
        object.__setattr__(self, "run", run)

    @property
    def folder(self) -> DataLocation:
        return self.data_dir.join("outputs", self.run)

    def avatar_folder(self, avatar: str) -> DataLocation:
        return self.folder / avatar

    def avatar_file(self, avatar: str, kind: str) -> DataLocation:
        return self.avatar_folder(avatar) / AVATAR_FILES[kind]

    def remove_avatar(self, avatar: str) -> bool:
        """Delete the avatar's output folder of this run, so that a row being rebuilt, or one that
        failed, shows no video of an earlier build. False when there was none, or when `avatar` is
        not a single plain name (a hostile id never names a folder to delete)."""
        if not avatar or avatar in (".", "..") or any(sep in avatar for sep in ("/", "\\", "\0")):
            return False
        folder = self.avatar_folder(avatar)
        if folder.is_local:
            if not folder.local_path.is_dir():
                return False
            shutil.rmtree(folder.local_path)
            return True
        try:
            folder.fs.rm(folder.fs_path, recursive=True)
        except FileNotFoundError:
            return False
        return True

    def avatar_folders(self) -> set[str]:
        """Names of the avatar folders this run's output folder holds (one listing)."""
        folder = self.folder
        if folder.is_local:
            if not folder.local_path.is_dir():
                return set()
            return {entry.name for entry in os.scandir(folder.local_path) if entry.is_dir()}
        try:
            entries = folder.fs.ls(folder.fs_path, detail=True)
        except FileNotFoundError:
            return set()
        return {entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in entries if entry.get("type") == "directory"}

    def remove_avatars(self, avatars: Iterable[str]) -> list[str]:
        """remove_avatar for each of `avatars` that has a folder; one listing first, so that a big
        manifest costs no call per row on an object store. Returns the avatars removed."""
        present = self.avatar_folders()
        return [avatar for avatar in dict.fromkeys(avatars) if avatar in present and self.remove_avatar(avatar)]

    @property
    def quarantine_csv(self) -> DataLocation:
        return self.folder / "quarantine.csv"

    @property
    def report_html(self) -> DataLocation:
        return self.folder / "report.html"

    @property
    def summary_json(self) -> DataLocation:
        return self.folder / "summary.json"


def publish_file(source: Path, target: DataLocation) -> DataLocation:
    """Copy a finished local file into place atomically, so a reader never sees half a file."""
    return target.put_file(source)


def write_quarantine(outputs: RunOutputs, failures: list[dict[str, Any]]) -> DataLocation:
    """One line per failed row: manifest line, id, stage, error."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=["line", "id", "stage", "error"])
    writer.writeheader()
    for failure in failures:
        writer.writerow({key: _inert_cell(failure.get(key, "")) for key in writer.fieldnames})
    return outputs.quarantine_csv.write_text(buffer.getvalue())


def _inert_cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: one that starts with = + - @, a tab or a carriage return gets a
    leading quote, so an id such as =HYPERLINK(...) is never a live formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_summary(outputs: RunOutputs, summary: dict[str, Any]) -> DataLocation:
    return outputs.summary_json.write_text(json.dumps(summary, indent=2, default=str))


def write_report(outputs: RunOutputs, avatars: list[dict[str, Any]], failures: list[dict[str, Any]],
                 summary: dict[str, Any] | None = None) -> DataLocation:
    """The run's dashboard (stores/report.py): posters, videos, stage timings, real-time factor, quarantine."""
    page = render_report_html(outputs.run, avatars, failures, summary or {})
    return outputs.report_html.write_text(page)
