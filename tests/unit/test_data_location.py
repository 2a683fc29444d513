"""The data location interface, on a local folder and on fsspec's in-memory filesystem, and the
stores that write through it."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid

import pytest

from stores.location import DataLocation, allowed_input_roots, is_url, local_state_dir
from stores.outputs import RunOutputs, publish_file, write_quarantine, write_report, write_summary
from stores.tracking import artifact_root, tracking_uri


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path) -> DataLocation:
    if request.param == "local":
        return DataLocation(tmp_path / "data")
    return DataLocation(f"memory://test-{uuid.uuid4().hex}/data")


def test_urls_and_local_paths_are_told_apart(tmp_path):
    assert is_url("s3://bucket/prefix") and is_url("memory://x")
    assert not is_url("relative/dir") and not is_url("/abs") and not is_url("file:///abs")
    assert DataLocation("s3://bucket/prefix/").url == "s3://bucket/prefix"
    assert DataLocation(f"file://{tmp_path}").url == str(tmp_path.resolve())
    local = DataLocation(tmp_path / "a" / ".." / "b")
    assert local.is_local and local.local_path == (tmp_path / "b").resolve()
    with pytest.raises(ValueError, match="not a local path"):
        DataLocation("s3://bucket/x").local_path


def test_join_names_children_and_refuses_escapes():
    base = DataLocation("s3://bucket/prefix")
    assert (base / "outputs").join("run", "a.mp4").url == "s3://bucket/prefix/outputs/run/a.mp4"
    assert base.join("outputs/run").name == "run"
    assert base.join("./a//b.png", ".").url == "s3://bucket/prefix/a/b.png"  # no literal "." keys
    assert base.join("a", "b.png").parent == base.join("a") and base.parent == DataLocation("s3://bucket")
    with pytest.raises(ValueError, match="no folder above it"):
        DataLocation("s3://bucket").parent
    for bad in ("../other", "/abs", "a/../../b"):
        with pytest.raises(ValueError, match="not a relative name"):
            base.join(bad)


def test_is_within_compares_whole_segments():
    root = DataLocation("s3://bucket/inputs")
    assert DataLocation("s3://bucket/inputs/a.jpg").is_within(root)
    assert DataLocation("s3://bucket/inputs").is_within(root)
    assert not DataLocation("s3://bucket/inputs-other/a.jpg").is_within(root)
    assert not DataLocation("s3://bucket/inputs/../secret.jpg").is_within(root)
    assert not DataLocation("gs://bucket/inputs/a.jpg").is_within(root)


def test_write_read_put_and_remove(root, tmp_path):
    text_file = root.join("notes", "hello.txt").write_text("grüße")
    assert text_file.exists() and text_file.read_text() == "grüße"
    with text_file.open() as handle:
        assert handle.read() == "grüße"
    source = tmp_path / "source.bin"
    source.write_bytes(b"\x00\x01" * 1000)
    copied = root.join("deep", "er", "copy.bin").put_file(source)
    assert copied.read_bytes() == source.read_bytes()
    size, version = copied.signature()
    assert size == 2000 and version
    with copied.local_copy() as local:
        assert local.read_bytes() == source.read_bytes()
    assert copied.remove() and not copied.exists() and not copied.remove()


def test_local_writes_leave_no_partial_file(tmp_path):
    target = DataLocation(tmp_path / "out" / "summary.json").write_text("{}")
    target.put_file(target.local_path)  # over itself: still whole
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.json"]


def test_create_exclusive_refuses_a_second_writer(root):
    lock = root.join("locks", "x.lock").create_exclusive(b"first")
    with pytest.raises(FileExistsError):
        lock.create_exclusive(b"second")
    assert lock.read_bytes() == b"first"


def test_signature_changes_with_the_content(root):
    target = root.join("a.txt").write_text("one")
    before = target.signature()
    target.write_text("three")
    assert target.signature() != before


def test_run_outputs_write_through_the_location(root, tmp_path):
    outputs = RunOutputs(root.url, "run1")
    assert outputs.avatar_file("a", "video").url == root.join("outputs", "run1", "a", "talk.mp4").url
    poster = tmp_path / "poster.png"
    poster.write_bytes(b"png")
    published = publish_file(poster, outputs.avatar_file("a", "poster"))
    assert published.read_bytes() == b"png"
    write_quarantine(outputs, [{"line": 3, "id": "b", "stage": "ingest", "error": "b.jpg: empty file"}])
    rows = list(csv.DictReader(io.StringIO(outputs.quarantine_csv.read_text())))
    assert [(r["line"], r["id"], r["error"]) for r in rows] == [("3", "b", "b.jpg: empty file")]
    write_summary(outputs, {"run": "run1"})
    assert json.loads(outputs.summary_json.read_text()) == {"run": "run1"}
    page = write_report(outputs, [{"id": "a", "line": 2, "outputs": {"poster": published.url}}], []).read_text()
    assert "run1" in page and outputs.report_html.exists()


def test_tracking_uri_is_sqlite_locally_and_from_the_environment_for_a_url(tmp_path, monkeypatch):
    monkeypatch.delenv("AVATARFLOW_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert artifact_root(tmp_path) == (tmp_path.resolve() / "mlartifacts").as_uri()
    with pytest.raises(ValueError, match="set AVATARFLOW_MLFLOW_TRACKING_URI"):
        tracking_uri("s3://bucket/data")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://db/mlflow")
    assert tracking_uri("s3://bucket/data") == "postgresql://db/mlflow"
    monkeypatch.setenv("AVATARFLOW_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/t.db")
    assert tracking_uri("s3://bucket/data") == f"sqlite:///{tmp_path}/t.db"
    assert artifact_root("s3://bucket/data/") == "s3://bucket/data/mlartifacts"


def test_local_state_and_input_roots_follow_the_kind_of_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATARFLOW_HOME", str(tmp_path / "home"))
    assert local_state_dir(tmp_path / "data") == (tmp_path / "data").resolve()
    assert local_state_dir("s3://bucket/data") == (tmp_path / "home").resolve()
    assert allowed_input_roots(tmp_path, ["/in"]) == ("/in",)
    assert allowed_input_roots("s3://bucket/data", ["/in"]) == ("/in", "s3://bucket/data")


def test_an_unknown_protocol_fails_with_one_line():
    with pytest.raises(ValueError, match="cannot open nosuchfs://x"):
        DataLocation("nosuchfs://x").ensure_folder()


def test_local_ensure_folder_creates_it(tmp_path):
    DataLocation(tmp_path / "new" / "data").ensure_folder()
    assert os.path.isdir(tmp_path / "new" / "data")
