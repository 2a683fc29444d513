"""Manifest inputs given as fsspec URLs: the allowed-root check, decoding, the fingerprint that
decides reuse, and training checkpoints under a data dir URL (on fsspec's in-memory filesystem)."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from stores.location import DataLocation
from tasks.batch.plan import row_fingerprint
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import load_audio, load_image, resolve_input_path
from tasks.render.runner import write_wav

CONFIG = IngestConfig()


@pytest.fixture
def bucket() -> DataLocation:
    return DataLocation(f"memory://inputs-{uuid.uuid4().hex}")


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_url_inputs_must_lie_under_a_url_root(bucket, tmp_path):
    face = bucket.join("people", "face.png").write_bytes(png_bytes(4, 3))
    with pytest.raises(AvatarInputError, match="face.png: URL is outside the allowed input locations"):
        resolve_input_path(face.url, tmp_path, CONFIG)
    allowed = replace(CONFIG, allowed_roots=(bucket.join("people").url,))
    assert resolve_input_path(face.url, tmp_path, allowed) == face
    for escaping in (bucket.join("people-else").url + "/face.png", bucket.join("people").url + "/../x.png"):
        with pytest.raises(AvatarInputError, match="outside the allowed input locations"):
            resolve_input_path(escaping, tmp_path, allowed)
    # A local path is still judged against the local roots only.
    with pytest.raises(AvatarInputError, match="outside the allowed input directories"):
        resolve_input_path("/etc/passwd", tmp_path, allowed)


def test_url_inputs_decode_like_local_files(bucket, tmp_path):
    face = bucket.join("face.png").write_bytes(png_bytes(6, 4))
    assert load_image(face, CONFIG).shape == (4, 6, 3)
    assert load_image(face.url, CONFIG).shape == (4, 6, 3)
    rate = CONFIG.sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate).astype(np.float32)
    speech = bucket.join("speech.wav").put_file(write_wav(tmp_path / "speech.wav", tone, rate))
    assert load_audio(speech, CONFIG).size == rate


def test_bad_url_inputs_get_one_line_errors(bucket):
    with pytest.raises(AvatarInputError, match="^gone.png: file not found$"):
        load_image(bucket.join("gone.png"), CONFIG)
    with pytest.raises(AvatarInputError, match="^empty.png: empty file$"):
        load_image(bucket.join("empty.png").write_bytes(b""), CONFIG)
    big = bucket.join("big.png").write_bytes(png_bytes(8, 8))
    with pytest.raises(AvatarInputError, match="^big.png: file is too large"):
        load_image(big, replace(CONFIG, max_file_bytes=10))
    bucket.join("folder", "inside.png").write_bytes(png_bytes(2, 2))
    with pytest.raises(AvatarInputError, match="^folder: not a regular file$"):
        load_image(bucket.join("folder"), CONFIG)


def test_fingerprint_follows_a_url_input(bucket, tmp_path):
    face = bucket.join("face.png").write_bytes(png_bytes(4, 4))
    row = AvatarRow(id="a", line=2, portrait=face.url, text="Hi.")
    first = row_fingerprint(row, tmp_path, "{}")
    assert row_fingerprint(row, tmp_path, "{}") == first
    face.write_bytes(png_bytes(5, 5))
    assert row_fingerprint(row, tmp_path, "{}") != first


def test_training_checkpoints_round_trip_under_a_url(bucket):
    import torch

    from tasks.common.training_io import checkpoint_path, load_checkpoint, save_checkpoint
    from tasks.gan.config import GAN_CONFIGS

    location = checkpoint_path(bucket.url, "gan", "abc", GAN_CONFIGS["small"])
    assert location.url.startswith(bucket.join("training", "gan").url + "/abc-")
    assert load_checkpoint(location) is None
    save_checkpoint(location, {"weights": torch.arange(4.0), "step": 3})
    state = load_checkpoint(location)
    assert state["step"] == 3 and torch.equal(state["weights"], torch.arange(4.0))
