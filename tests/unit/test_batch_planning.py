"""Planning a big run: ingest's first checks made while planning give ingest's own messages, the
batch settings are bounded, and a big run's report page is capped while its counts stay whole."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from stores.report import render_report_html
from tasks.batch.config import WINDOW_VARIABLE, BatchConfig
from tasks.batch.task import input_error
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_audio, load_image, resolve_input_path


def ingest_message(value: str, folder, config: IngestConfig, image: bool) -> str | None:
    """What ingest's own calls raise for the input (resolve, then decode)."""
    try:
        path = resolve_input_path(value, folder, config)
        (load_image if image else load_audio)(path, config)
    except AvatarInputError as error:
        return str(error)
    return None


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(folder / "face.png")
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(folder / "wide.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    (folder / "big.png").write_bytes(b"\x89PNG" + b"\0" * 5000)
    (folder / "empty.wav").write_bytes(b"")
    (tmp_path / "outside.png").write_bytes((folder / "face.png").read_bytes())
    (folder / "escape.png").symlink_to(tmp_path / "outside.png")
    return folder


@pytest.mark.parametrize("portrait, audio", [
    ("missing.png", None), ("empty.png", None), ("notes.png", None), ("big.png", None), ("wide.png", None),
    ("../outside.png", None), ("escape.png", None), ("/etc/hostname", None), ("face.png", "missing.wav"),
    ("face.png", "empty.wav"), ("missing.png", "empty.wav"),
])
def test_a_row_failing_ingests_first_checks_gets_ingests_message(inputs, portrait, audio):
    config = IngestConfig(max_file_bytes=4000, max_image_pixels=250 * 250)
    row = AvatarRow(id="r", line=2, portrait=portrait, text=None if audio else "Hi.", audio=audio)
    expected = ingest_message(portrait, inputs, config, image=True)
    if expected is None and audio is not None:
        expected = ingest_message(audio, inputs, config, image=False)
    assert expected is not None
    assert input_error(row, str(inputs), config) == expected


def test_a_good_row_passes_the_checks(inputs):
    row = AvatarRow(id="r", line=2, portrait="face.png", text="Hi.")
    assert input_error(row, str(inputs), IngestConfig()) is None
    assert input_error(AvatarRow(id="g", line=3, identity="generate:1", text="Hi."), str(inputs), IngestConfig()) is None


def test_batch_settings_are_bounded_and_read_from_the_environment(monkeypatch):
    assert BatchConfig().window == 64
    with pytest.raises(ValueError):
        BatchConfig(window=0)
    monkeypatch.setenv(WINDOW_VARIABLE, "8")
    assert BatchConfig.from_environment().window == 8
    assert BatchConfig.from_environment(window=2).window == 2
    monkeypatch.setenv(WINDOW_VARIABLE, "many")
    with pytest.raises(ValueError, match=WINDOW_VARIABLE):
        BatchConfig.from_environment()


def test_a_big_runs_report_shows_the_first_rows_and_says_so():
    failures = [{"line": i + 2, "id": f"row{i}", "stage": "manifest", "error": "id must be …"} for i in range(2500)]
    avatars = [{"id": f"a{i}", "line": i, "seconds": {"ingest": 1.0}, "outputs": {}} for i in range(1200)]
    page = render_report_html("run", avatars, failures, {}, max_rows=1000)
    assert page.count('<tr class="quarantined">') == 1000 and page.count('<figure class="avatar"') == 1000
    assert page.count('class="bar"') == 1000
    assert "Showing the first 1000 of 2500 quarantined rows" in page
    assert "Showing the first 1000 of 1200 avatars" in page
    assert re.search(r"<b>2500</b><span>quarantined", page) and re.search(r"<b>1200</b><span>finished", page)
    small = render_report_html("run", avatars[:3], failures[:3], {})
    assert "Showing the first" not in small and small.count('<tr class="quarantined">') == 3
