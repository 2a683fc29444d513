"""A manifest given as an fsspec URL (on fsspec's in-memory filesystem): reading it, resolving its
relative inputs against its folder URL, the fingerprint of those inputs, the run name, planning a
run from it, and the CLI's checks before any server starts."""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import stores.manifest
from stores.location import DataLocation
from stores.manifest import ManifestError, read_manifest
from tasks.batch.plan import row_fingerprint, run_name
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_image, resolve_input_path

CONFIG = IngestConfig()
CSV = "id,portrait,text\nnear,faces/a.png,Hello.\nfar,../secret.png,Hi.\n"


@pytest.fixture
def bucket() -> DataLocation:
    return DataLocation(f"memory://manifests-{uuid.uuid4().hex}")


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_csv_manifest_is_read_from_a_url(bucket):
    data = CSV.encode("utf-8") + b"bad,faces/b.png,caf\xe9\n"
    manifest = bucket.join("inputs", "nightly.csv").write_bytes(data)
    table = read_manifest(manifest.url)
    assert table.path == manifest and table.folder == bucket.join("inputs")
    assert [row["id"] for row in table.rows] == ["near", "far", "bad"]
    assert table.rows[0]["portrait"] == "faces/a.png" and table.line_numbers == [2, 3, 4]
    assert table.row_errors == {2: "column 'text' is not valid UTF-8"}
    assert table.sha256 == hashlib.sha256(data).hexdigest()
    assert read_manifest(manifest).rows == table.rows  # a DataLocation reads the same


def test_a_parquet_manifest_is_read_from_a_url(bucket):
    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame({"id": ["a", "b"], "portrait": ["p.png", "q.png"], "audio": ["x.wav", None],
                  "fps": [30, None]}).to_parquet(buffer)
    manifest = bucket.join("inputs", "batch.parquet").write_bytes(buffer.getvalue())
    table = read_manifest(manifest.url)
    assert table.rows[0]["audio"] == "x.wav" and table.rows[0]["fps"] == "30"
    assert table.rows[1]["audio"] is None and table.rows[1]["fps"] is None and table.line_numbers == [1, 2]
    assert table.folder.url == bucket.join("inputs").url
    bucket.join("inputs", "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ManifestError, match=r"^broken.parquet: not a readable Parquet file"):
        read_manifest(bucket.join("inputs", "broken.parquet").url)


def test_unusable_url_manifests_get_one_line_errors(bucket, monkeypatch):
    missing = bucket.join("inputs", "missing.csv")
    with pytest.raises(ManifestError, match=f"^manifest not found: {missing.url}$"):
        read_manifest(missing.url)
    empty = bucket.join("inputs", "empty.csv").write_bytes(b"")
    with pytest.raises(ManifestError, match=f"^manifest is empty: {empty.url}$"):
        read_manifest(empty.url)
    bucket.join("inputs", "folder.csv", "inside.csv").write_text(CSV)
    with pytest.raises(ManifestError, match="^manifest is not a file: .*/folder.csv$"):
        read_manifest(bucket.join("inputs", "folder.csv").url)
    unknown = bucket.join("inputs", "unknown.csv").write_text("id,portrait,favourite_colour\na,p.png,teal\n")
    with pytest.raises(ManifestError, match=r"^unknown.csv: unknown column\(s\) 'favourite_colour'"):
        read_manifest(unknown.url)
    with pytest.raises(ManifestError, match="^manifest URL must name a file in a bucket or folder"):
        read_manifest("memory://top-level.csv")
    with pytest.raises(ManifestError, match="^manifest cannot be read: nosuchprotocol://b/m.csv"):
        read_manifest("nosuchprotocol://b/m.csv")
    big = bucket.join("inputs", "big.csv").write_text(CSV)
    monkeypatch.setattr(stores.manifest, "MAX_MANIFEST_BYTES", 10)
    with pytest.raises(ManifestError, match=r"^big.csv: manifest is too large"):
        read_manifest(big.url)


def test_relative_inputs_resolve_against_the_manifest_folder_url(bucket):
    folder = bucket.join("inputs")
    face = folder.join("faces", "a.png").write_bytes(png_bytes(6, 4))
    bucket.join("secret.png").write_bytes(png_bytes(2, 2))
    for relative in ("faces/a.png", "./faces/a.png", "faces//a.png"):
        assert resolve_input_path(relative, folder.url, CONFIG) == face
    assert load_image(resolve_input_path("faces/a.png", folder.url, CONFIG), CONFIG).shape == (4, 6, 3)
    # `..` is never followed, even where it would stay inside the folder.
    for escaping in ("../secret.png", "faces/../../secret.png", "faces/../a.png"):
        with pytest.raises(AvatarInputError, match=r"^\w+.png: path is outside the allowed input locations"):
            resolve_input_path(escaping, folder.url, CONFIG)
    # An absolute URL: allowed under the manifest's folder, elsewhere only under an input root.
    assert resolve_input_path(face.url, folder.url, CONFIG) == face
    with pytest.raises(AvatarInputError, match="^secret.png: URL is outside the allowed input locations"):
        resolve_input_path(bucket.join("secret.png").url, folder.url, CONFIG)
    with pytest.raises(AvatarInputError, match="outside the allowed input locations"):
        resolve_input_path(folder.url + "/../secret.png", folder.url, CONFIG)
    rooted = replace(CONFIG, allowed_roots=(bucket.url,))
    assert resolve_input_path(bucket.join("secret.png").url, folder.url, rooted) == bucket.join("secret.png")
    # A local absolute path beside a URL manifest is judged against the local input roots only.
    with pytest.raises(AvatarInputError, match="^passwd: path is outside the allowed input directories$"):
        resolve_input_path("/etc/passwd", folder.url, CONFIG)


def test_fingerprint_follows_a_relative_url_input(bucket):
    folder = bucket.join("inputs")
    face = folder.join("faces", "a.png").write_bytes(png_bytes(4, 4))
    row = AvatarRow(id="a", line=2, portrait="faces/a.png", text="Hi.")
    first = row_fingerprint(row, folder.url, "{}")
    assert row_fingerprint(row, folder.url, "{}") == first
    face.write_bytes(png_bytes(5, 5))
    changed = row_fingerprint(row, folder.url, "{}")
    assert changed != first
    face.remove()
    assert row_fingerprint(row, folder.url, "{}") not in (first, changed)  # gone: no signature


def test_run_name_of_a_url_manifest_is_stable_and_local_names_are_unchanged(bucket, tmp_path):
    url = bucket.join("inputs", "nightly run.csv").url
    name = run_name(url, "photo")
    assert name == run_name(url, "photo") == run_name(url + "/", "photo") == run_name(DataLocation(url), "photo")
    digest = hashlib.sha256(f"{url}\0photo".encode("utf-8")).hexdigest()[:10]
    assert name == f"nightly-run-{digest}"
    assert name != run_name(url, "lit") and name != run_name(bucket.join("other", "nightly run.csv").url, "photo")
    # A local manifest keeps the name existing stores hold its runs under.
    local = tmp_path / "nightly run.csv"
    digest = hashlib.sha256(f"{local.resolve()}\0photo".encode("utf-8")).hexdigest()[:10]
    assert run_name(local, "photo") == run_name(str(local), "photo") == f"nightly-run-{digest}"


def test_a_run_is_planned_from_a_url_manifest(bucket, tmp_path):
    from avatarflow.presets import get_preset
    from tasks.batch.task import plan_run

    from stores.avatar_store import AvatarStore

    folder = bucket.join("inputs")
    face = folder.join("faces", "a.png").write_bytes(png_bytes(4, 4))
    manifest = folder.join("nightly.csv").write_text(CSV)

    def plan():
        return plan_run.fn(manifest.url, str(tmp_path / "data"), "photo", get_preset("photo"))

    first = plan()
    assert first.run == run_name(manifest.url, "photo")
    assert first.manifest_dir == folder.url
    assert first.manifest_sha256 == hashlib.sha256(CSV.encode("utf-8")).hexdigest()
    assert [row.id for row in first.pending] == ["near"]
    # ingest's own check on the input path quarantines "far" while planning, with ingest's message
    assert [(q["id"], q["stage"]) for q in first.quarantined] == [("far", "ingest")]
    assert first.quarantined[0]["error"].startswith("secret.png: path is outside the allowed input locations")
    # A completed avatar whose relative URL input is unchanged is reused; a changed input rebuilds it.
    AvatarStore(first.store_url).mark_complete(first.run, "near", {})
    second = plan()
    assert [row.id for row in second.reused] == ["near"] and second.pending == []
    face.write_bytes(png_bytes(5, 5))
    assert [row.id for row in plan().pending] == ["near"]


def test_the_cli_checks_a_url_manifest_before_any_server_starts(bucket, tmp_path, capsys):
    from avatarflow.cli import main
    from stores.run_lock import acquire_run_lock, release_run_lock

    data_dir = tmp_path / "data"
    missing = bucket.join("inputs", "missing.csv").url
    assert main(["produce", missing, "--data-dir", str(data_dir)]) == 2
    assert capsys.readouterr().err.strip() == f"error: manifest not found: {missing}"
    manifest = bucket.join("inputs", "nightly.csv").write_text(CSV)
    held = acquire_run_lock(data_dir, run_name(manifest.url, "photo"))
    try:
        assert main(["produce", manifest.url, "--data-dir", str(data_dir)]) == 2
    finally:
        release_run_lock(held)
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: run 'nightly-") and "already being produced" in error
    assert not (data_dir / "prefect").exists()
