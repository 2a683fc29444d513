"""Ingest decoding on real sample media and on broken or out-of-limit files."""

import shutil
import subprocess
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.common.errors import AvatarInputError
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import (audio_warnings, clipping_fraction, load_audio, load_image,
                                resolve_input_path)

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "samples"
AUDIO_SAMPLES = sorted((SAMPLES / "audio").glob("*.wav"))
PORTRAIT = SAMPLES / "portraits" / "sfhq_expr_smiling.jpg"
CONFIG = IngestConfig()
RATE = CONFIG.sample_rate
FRAME = RATE // 25  # one 25 fps video frame of samples


def wav_seconds(path: Path) -> float:
    """Duration from the container header, read with PyAV independently of load_audio."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    pcm = np.clip(samples * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())
    return path


def test_samples_present():
    assert len(AUDIO_SAMPLES) >= 3


@pytest.mark.parametrize("path", AUDIO_SAMPLES, ids=lambda p: p.name)
def test_sample_wavs_decode_to_16k_mono(path):
    audio = load_audio(path, CONFIG)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - wav_seconds(path) * RATE) <= FRAME
    assert np.abs(audio).max() <= 1.5
    assert np.sqrt(np.mean(audio ** 2)) > 1e-3


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """One sample converted by the ffmpeg binary into compressed formats."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg binary not installed")
    folder = tmp_path_factory.mktemp("encoded")
    source = SAMPLES / "audio" / "en_em_echomimic_en.wav"
    outputs = {}
    for suffix, codec in [("mp3", ["-c:a", "libmp3lame"]), ("flac", ["-c:a", "flac"]),
                          ("ogg", ["-c:a", "libvorbis"]), ("opus", ["-c:a", "libopus"]),
                          ("m4a", ["-c:a", "aac"])]:
        target = folder / f"speech.{suffix}"
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(source), *codec, str(target)], check=True)
        outputs[suffix] = target
    return source, outputs


@pytest.mark.parametrize("suffix", ["mp3", "flac", "ogg", "opus", "m4a"])
def test_compressed_formats_decode(encoded, suffix):
    source, outputs = encoded
    reference = load_audio(source, CONFIG)
    audio = load_audio(outputs[suffix], CONFIG)
    # Lossy encoders add a little padding; stay within one video frame plus the codec delay (< 50 ms).
    assert abs(audio.size - reference.size) <= FRAME + int(0.05 * RATE)
    # The same speech: loudness envelopes correlate strongly.
    n = min(audio.size, reference.size) // 400 * 400
    env_a = np.sqrt((audio[:n].reshape(-1, 400) ** 2).mean(axis=1))
    env_b = np.sqrt((reference[:n].reshape(-1, 400) ** 2).mean(axis=1))
    assert np.corrcoef(env_a, env_b)[0, 1] > 0.9


def test_truncated_mp3_is_rejected(encoded, tmp_path):
    _, outputs = encoded
    data = outputs["mp3"].read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 4])
    with pytest.raises(AvatarInputError, match="cut.mp3: audio is truncated"):
        load_audio(cut, CONFIG)


def test_broken_audio_files_are_input_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AvatarInputError, match="empty.wav: empty file"):
        load_audio(empty, CONFIG)

    with pytest.raises(AvatarInputError, match="missing.wav: file not found"):
        load_audio(tmp_path / "missing.wav", CONFIG)

    header_only = tmp_path / "header.wav"
    header_only.write_bytes((SAMPLES / "audio" / "en_em_echomimic_en.wav").read_bytes()[:30])
    with pytest.raises(AvatarInputError, match="header.wav: not a readable audio file"):
        load_audio(header_only, CONFIG)

    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AvatarInputError, match="garbage.mp3"):
        load_audio(garbage, CONFIG)

    image = tmp_path / "picture.wav"
    image.write_bytes(PORTRAIT.read_bytes())
    with pytest.raises(AvatarInputError, match="picture.wav"):
        load_audio(image, CONFIG)


def test_silent_short_and_long_audio_are_rejected(tmp_path):
    silent = write_wav(tmp_path / "silent.wav", np.zeros(RATE * 2))
    with pytest.raises(AvatarInputError, match="silent.wav: audio is silent"):
        load_audio(silent, CONFIG)

    quiet = write_wav(tmp_path / "quiet.wav", 10 ** (-60 / 20) * np.sin(np.arange(RATE * 2) * 0.1))
    with pytest.raises(AvatarInputError, match="audio is silent"):
        load_audio(quiet, CONFIG)

    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(RATE * 3) / RATE)
    short = write_wav(tmp_path / "short.wav", tone[: RATE // 10])
    with pytest.raises(AvatarInputError, match="short.wav: audio is too short"):
        load_audio(short, CONFIG)

    long = write_wav(tmp_path / "long.wav", tone)
    with pytest.raises(AvatarInputError, match="long.wav: audio is too long"):
        load_audio(long, replace(CONFIG, max_audio_seconds=2.0))
    assert load_audio(long, CONFIG).size == 3 * RATE

    with pytest.raises(AvatarInputError, match="file is too large"):
        load_audio(long, replace(CONFIG, max_file_bytes=1000))


def test_clipping_is_reported_but_accepted(tmp_path):
    loud = np.clip(3.0 * np.sin(2 * np.pi * 200 * np.arange(RATE) / RATE), -1.0, 1.0)
    audio = load_audio(write_wav(tmp_path / "loud.wav", loud), CONFIG)
    assert clipping_fraction(audio) > 0.1
    assert any("clipped" in note for note in audio_warnings(audio))
    assert audio_warnings(0.5 * np.sin(np.arange(RATE) * 0.05)) == []


def test_portrait_decodes_to_rgb():
    image = load_image(PORTRAIT, CONFIG)
    with Image.open(PORTRAIT) as reference:
        width, height = reference.size
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert image.std() > 10


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    image = load_image(path, CONFIG)
    assert image.shape == (100, 40, 3)
    # After a clockwise turn the former left half is at the top.
    assert image[:40, :, 0].mean() > 200 and image[60:, :, 0].mean() < 50


def test_grey_and_alpha_images_become_rgb(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((8, 9), 77, np.uint8)).save(grey)
    assert load_image(grey, CONFIG).shape == (8, 9, 3)
    rgba = tmp_path / "alpha.png"
    Image.fromarray(np.full((5, 6, 4), 200, np.uint8)).save(rgba)
    assert load_image(rgba, CONFIG).shape == (5, 6, 3)


def test_bad_images_are_input_errors(tmp_path):
    with pytest.raises(AvatarInputError, match=r"too many pixels \(898x897"):
        load_image(SAMPLES / "portraits" / "sfhq_pt2_00003040.jpg", replace(CONFIG, max_image_pixels=500_000))

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(PORTRAIT.read_bytes()[:2000])
    with pytest.raises(AvatarInputError, match="corrupt.jpg"):
        load_image(corrupt, CONFIG)

    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(AvatarInputError, match="notes.png: not an image"):
        load_image(text, CONFIG)

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(AvatarInputError, match="empty.jpg: empty file"):
        load_image(empty, CONFIG)

    with pytest.raises(AvatarInputError, match="gone.jpg: file not found"):
        load_image(tmp_path / "gone.jpg", CONFIG)


def test_input_paths_stay_inside_allowed_roots(tmp_path):
    base = tmp_path / "manifest"
    base.mkdir()
    (base / "face.jpg").write_bytes(b"x")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "voice.wav").write_bytes(b"x")
    assert resolve_input_path("face.jpg", base, CONFIG) == (base / "face.jpg").resolve()
    with pytest.raises(AvatarInputError, match="outside the allowed input directories"):
        resolve_input_path("../elsewhere/voice.wav", base, CONFIG)
    allowed = replace(CONFIG, allowed_roots=(str(outside),))
    assert resolve_input_path(outside / "voice.wav", base, allowed) == (outside / "voice.wav").resolve()
