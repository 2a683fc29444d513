"""Run reports: quarantine CSV and the dashboard page."""

import csv

from stores.outputs import RunOutputs, write_quarantine, write_report


def test_report_links_only_written_files_and_escapes_errors(tmp_path):
    outputs = RunOutputs(tmp_path, "run1")
    written = {kind: str(outputs.avatar_file("a", kind)) for kind in ("video", "glb", "poster")}
    finished = [{"id": "a", "line": 2, "outputs": written, "seconds": {"render": 1.5},
                 "warnings": ["2 faces found in the portrait; using the largest"]}]
    failures = [{"line": 3, "id": "b", "stage": "ingest", "error": "<b>.jpg: empty file"}]
    page = write_report(outputs, finished, failures, {"realtime_factor": 1.25}).read_text()
    assert 'href="a/avatar.glb"' in page and 'src="a/talk.mp4"' in page and "avatar.blend" not in page
    assert "&lt;b&gt;.jpg: empty file" in page and "using the largest" in page and "render 1.5 s" in page
    assert "1.25×" in page


def test_quarantine_has_one_line_per_failed_row(tmp_path):
    path = write_quarantine(RunOutputs(tmp_path, "r"), [
        {"line": 3, "id": "b", "stage": "ingest", "error": "b.jpg: empty file"},
        {"line": 5, "id": "c", "stage": "manifest", "error": "duplicate id 'c' (already used by an earlier row)"},
    ])
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["line"], r["id"], r["stage"]) for r in rows] == [("3", "b", "ingest"), ("5", "c", "manifest")]
