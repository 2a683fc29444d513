"""Output files of a run: `<data>/outputs/<run>/<avatar>/` plus the run's reports, under a local
data dir or a data dir URL alike."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        writer.writerow({key: failure.get(key, "") for key in writer.fieldnames})
    return outputs.quarantine_csv.write_text(buffer.getvalue())


def write_summary(outputs: RunOutputs, summary: dict[str, Any]) -> DataLocation:
    return outputs.summary_json.write_text(json.dumps(summary, indent=2, default=str))


def write_report(outputs: RunOutputs, avatars: list[dict[str, Any]], failures: list[dict[str, Any]],
                 summary: dict[str, Any] | None = None) -> DataLocation:
    """The run's dashboard (stores/report.py): posters, videos, stage timings, real-time factor, quarantine."""
    page = render_report_html(outputs.run, avatars, failures, summary or {})
    return outputs.report_html.write_text(page)
