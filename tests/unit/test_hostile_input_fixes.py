"""Regressions found when avatarflow was used as a hostile user would: wide-grey images, duplicate
manifest columns, formulas in the quarantine CSV, manifest messages, WAV headers that claim more than
the file holds, unknown style presets, the stray `NoneType: None` log and the Dask dashboard."""

from __future__ import annotations

import csv
import io
import logging
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from stores.manifest import ManifestError, read_manifest
from stores.outputs import RunOutputs, write_quarantine
from tasks.common.errors import AvatarInputError
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_audio, load_image

CONFIG = IngestConfig()


def test_sixteen_bit_grey_png_keeps_its_greys(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # Pillow opens it as a wide grey
    decoded = load_image(path, CONFIG)
    assert decoded.shape == (16, 64, 3)
    assert np.abs(decoded[..., 0].astype(int) - (ramp.astype(int) >> 8)).max() <= 1
    assert (decoded[..., 0] == decoded[..., 2]).all() and decoded.min() == 0 and decoded.max() == 255


def test_float_grey_tiff_is_scaled_and_nan_is_refused(tmp_path):
    values = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (8, 1))
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    decoded = load_image(tmp_path / "float.tif", CONFIG)
    assert abs(int(decoded[0, -1, 0]) - 255) <= 1 and decoded[0, 0, 0] == 0
    values[2, 3] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(AvatarInputError, match="nan.tif: image holds invalid pixel values"):
        load_image(tmp_path / "nan.tif", CONFIG)


def test_duplicate_columns_reject_csv_and_parquet_manifests(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "m.csv"
    path.write_text("id,portrait,text,text\na,p.jpg,hello,bye\n")
    with pytest.raises(ManifestError, match=r"m.csv: duplicate column\(s\) 'text'"):
        read_manifest(path)
    path.write_text("id, portrait,portrait ,text\na,p.jpg,q.jpg,hi\n")  # the same name once stripped
    with pytest.raises(ManifestError, match="duplicate column.*'portrait'"):
        read_manifest(path)
    table = pa.table([pa.array(["a"]), pa.array(["p.jpg"]), pa.array(["hi"]), pa.array(["bye"])],
                     names=["id", "portrait", "text", "text"])
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match=r"m.parquet: duplicate column\(s\) 'text'"):
        read_manifest(tmp_path / "m.parquet")


def test_parquet_index_columns_are_not_manifest_columns(tmp_path):
    import pandas as pd

    pd.DataFrame({"id": ["a", "b"], "portrait": ["p.jpg", "q.jpg"], "text": ["hi", "yo"]},
                 index=[7, 9]).to_parquet(tmp_path / "m.parquet")
    assert [row["id"] for row in read_manifest(tmp_path / "m.parquet").rows] == ["a", "b"]


def test_quarantine_cells_never_start_a_formula(tmp_path):
    hostile = ['=HYPERLINK("http://example.com","click")', "+1+1", "-2", "@SUM(A1)", "\t=1", "\r=1"]
    failures = [{"line": i + 2, "id": value, "stage": "manifest", "error": value} for i, value in enumerate(hostile)]
    failures.append({"line": 9, "id": "plain-id", "stage": "ingest", "error": "p.jpg: empty file"})
    path = write_quarantine(RunOutputs(tmp_path, "r"), failures)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row, value in zip(rows, hostile):
        assert row["id"] == row["error"] == "'" + value
    assert rows[-1] == {"line": "9", "id": "plain-id", "stage": "ingest", "error": "p.jpg: empty file"}
    assert [row["line"] for row in rows] == ["2", "3", "4", "5", "6", "7", "9"]


@pytest.mark.parametrize("content, message", [
    (bytes(range(128, 256)) * 20, "m.csv: not a CSV text file (it holds binary data)"),
    (b"id,portrait\n\x00\x01\x02", "m.csv: not a CSV text file (it holds binary data)"),
    (b"PK\x03\x04" + bytes(100), "m.csv: not a CSV text file (it is a ZIP archive or an Excel workbook: save it as CSV)"),
    ("id,portrait,text\n".encode("utf-16"), "m.csv: not a CSV text file (it is UTF-16 text: save it as UTF-8)"),
    ("id,portrait,légende\na,p.jpg,x\n".encode("latin-1"),
     "m.csv: not a CSV text file (its header is not UTF-8: save it as UTF-8)"),
])
def test_binary_manifest_is_described_not_echoed(tmp_path, content, message):
    path = tmp_path / "m.csv"
    path.write_bytes(content)
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    assert str(caught.value) == message


def test_misnamed_and_folder_manifests_say_what_they_are(tmp_path):
    csv_text = tmp_path / "m.parquet"
    csv_text.write_text("id,portrait,text\na,p.jpg,hi\n")
    with pytest.raises(ManifestError, match=r"^m.parquet: not a Parquet file \(it holds text, perhaps CSV: name it .csv\)$"):
        read_manifest(csv_text)
    csv_text.write_bytes(bytes(range(256)))
    with pytest.raises(ManifestError, match=r"^m.parquet: not a Parquet file \(no Parquet header\)$"):
        read_manifest(csv_text)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(ManifestError, match="^manifest is a directory, not a file: "):
        read_manifest(folder)
    with pytest.raises(ManifestError, match="^manifest not found: "):
        read_manifest(tmp_path / "gone.csv")


def test_latin1_byte_in_a_row_stays_a_row_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"id,portrait,text\na,p.jpg,caf\xe9\nb,p.jpg,hi\n")
    assert read_manifest(path).row_errors == {0: "column 'text' is not valid UTF-8"}


def _wav(path, frames: int, claimed_frames: int, rate: int = 16000, data_size: int | None = None):
    samples = (0.3 * np.sin(np.arange(frames) * 0.07) * 32767).astype("<i2").tobytes()
    size = claimed_frames * 2 if data_size is None else data_size
    path.write_bytes(b"RIFF" + struct.pack("<I", (36 + size) & 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
                     + b"data" + struct.pack("<I", size) + samples)
    return path


def test_wav_holding_less_than_its_header_declares_is_truncated(tmp_path):
    with pytest.raises(AvatarInputError, match=r"cut.wav: audio is truncated or corrupt \(its header declares 2.00 s, "
                                               r"the file holds 0.50 s\)"):
        load_audio(_wav(tmp_path / "cut.wav", 8000, 32000), CONFIG)
    assert load_audio(_wav(tmp_path / "whole.wav", 32000, 32000), CONFIG).size == 32000
    # A streamed WAV leaves the size open (0xFFFFFFFF): FFmpeg's length is used.
    assert load_audio(_wav(tmp_path / "stream.wav", 16000, 0, data_size=0xFFFFFFFF), CONFIG).size == 16000


def test_unknown_style_preset_is_named_as_one(tmp_path):
    from tasks.style.task import style_image

    with pytest.raises(AvatarInputError, match=r"^unknown style preset 'oilx'; the presets are oil, sketch, "
                                               r"mosaic, watercolour \(or give a style image path\)$"):
        style_image("oilx", str(tmp_path), CONFIG)
    with pytest.raises(AvatarInputError, match="^missing.png: file not found$"):
        style_image("missing.png", str(tmp_path), CONFIG)
    assert style_image("sketch", str(tmp_path), CONFIG)[0] == "sketch"


def _log_failures(logger: logging.Logger) -> None:
    """What Prefect logs for a task that returned a Failed state, then for one that raised."""
    logger.error("Task run failed with state: Failed('ingest: a.jpg: empty file')", exc_info=True)
    try:
        raise RuntimeError("a real bug")
    except RuntimeError:
        logger.error("Task run failed with exception", exc_info=True)


def test_failed_state_log_has_no_empty_traceback():
    import tasks.common.stage_task  # noqa: F401  installs the filter

    logger = logging.getLogger("prefect.task_runs")
    stream = io.StringIO()
    # Only this handler: outside a flow run, Prefect's own API handler could not send the records.
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [logging.StreamHandler(stream)], False
    try:
        _log_failures(logger)
    finally:
        logger.handlers, logger.propagate = handlers, propagate
    text = stream.getvalue()
    assert "NoneType: None" not in text and "empty file" in text
    assert "Traceback" in text and "RuntimeError: a real bug" in text  # a real exception keeps its traceback


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("dashboard", [False, True])
def test_dask_dashboard_follows_the_setting(dashboard):
    from infra.profiles import start_local_cluster

    with start_local_cluster(n_workers=0, dashboard=dashboard) as cluster:
        port = cluster.scheduler.http_server.port
        assert _status(f"http://127.0.0.1:{port}/health") == 200
        assert _status(f"http://127.0.0.1:{port}/status") == (200 if dashboard else 404)
        assert _status(f"http://127.0.0.1:{port}/info/main/workers.html") == (200 if dashboard else 404)
        assert bool(cluster.dashboard_link) == dashboard


def test_profile_dashboard_setting(monkeypatch):
    from infra.profiles import get_profile

    monkeypatch.delenv("AVATARFLOW_DASK_DASHBOARD", raising=False)
    assert get_profile("local").cluster_kwargs()["dashboard"] is False
    monkeypatch.setenv("AVATARFLOW_DASK_DASHBOARD", "1")
    assert get_profile("local").cluster_kwargs()["dashboard"] is True


def test_local_prefect_port_is_resolved_before_it_is_printed(monkeypatch):
    from infra.prefect_server import DEFAULT_PORT, local_port

    monkeypatch.delenv("AVATARFLOW_PREFECT_PORT", raising=False)
    assert local_port() == DEFAULT_PORT and local_port(4321) == 4321
    monkeypatch.setenv("AVATARFLOW_PREFECT_PORT", "4555")
    assert local_port() == 4555 and local_port(4321) == 4321
