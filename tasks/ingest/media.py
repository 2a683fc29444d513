"""Decoding of a row's portrait image and audio, with the checks that turn bad files into AvatarInputError.

Images are opened with Pillow (size checked from the header before pixels are decoded, EXIF orientation applied).
Audio of any common container/codec is decoded with PyAV and resampled to mono float32 at the configured rate.
An input may be a local path or an fsspec URL (s3://…); a URL input is checked from its listing, then fetched
into a temporary file to decode.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Iterator

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stores.location import DataLocation, is_url
from tasks.common.errors import AvatarInputError
from tasks.ingest.config import IngestConfig

# Loudness is judged on windows of this length (seconds) when deciding whether audio is silent.
_LOUDNESS_WINDOW_S = 0.1
# Samples at or above this magnitude count as clipped (resampling blurs exact full-scale values a little).
_CLIP_LEVEL = 0.98
# A decoded stream shorter than this fraction of the container's declared duration is treated as truncated.
_MIN_DECODED_FRACTION = 0.5


InputFile = Path | DataLocation
"""A resolved input: a local path, or a DataLocation for a URL input."""


def resolve_input_path(path: str | os.PathLike, base_dir: str | os.PathLike, config: IngestConfig) -> InputFile:
    """Resolve a manifest path (relative ones against base_dir) and require it to lie under an allowed root.

    Allowed roots are base_dir itself and config.allowed_roots; symlinks are resolved first so they cannot escape.
    A URL must lie under one of config.allowed_roots given as a URL, or under base_dir when that is a URL (the
    folder of a URL manifest). Beside a URL manifest, a relative path names an object below that folder.
    """
    text = os.fspath(path)
    manifest_url = DataLocation(base_dir) if is_url(base_dir) else None
    if is_url(text):
        return _resolve_input_url(text, manifest_url, config)
    candidate = Path(text.removeprefix("file://"))
    if manifest_url is not None and not candidate.is_absolute():
        return _resolve_relative_url(text, manifest_url)
    base_roots = [] if manifest_url is not None else [Path(base_dir).resolve()]
    if not candidate.is_absolute():
        candidate = base_roots[0] / candidate
    try:
        resolved = candidate.resolve()
    except (ValueError, RuntimeError, OSError) as error:  # NUL bytes, symlink loops
        raise AvatarInputError(f"{Path(path).name}: unusable path ({error})") from error
    roots = base_roots + [Path(r).resolve() for r in config.allowed_roots if not is_url(r)]
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise AvatarInputError(f"{Path(path).name}: path is outside the allowed input directories")
    return resolved


def _resolve_relative_url(path: str, manifest_folder: DataLocation) -> DataLocation:
    """A relative path beside a URL manifest: the object below the manifest's folder. An object store keeps
    `..` as a literal name, so it is refused rather than followed."""
    try:
        return manifest_folder.join(path)
    except ValueError:
        raise AvatarInputError(f"{PurePosixPath(path).name}: path is outside the allowed input locations "
                               "('..' is not followed beside a URL manifest)") from None


def _resolve_input_url(url: str, manifest_folder: DataLocation | None, config: IngestConfig) -> DataLocation:
    location = DataLocation(url)
    roots = [DataLocation(r) for r in config.allowed_roots if is_url(r)]
    roots += [manifest_folder] if manifest_folder is not None else []
    if not any(location.is_within(root) for root in roots):
        raise AvatarInputError(f"{location.name}: URL is outside the allowed input locations "
                               "(give its prefix as an input root)")
    return location


def check_input_file(path: InputFile, config: IngestConfig) -> int:
    """Check that the file exists, is a regular non-empty file within the size limit; return its size."""
    name = path.name
    if isinstance(path, DataLocation):
        size = _remote_size(path)
    elif not path.exists():
        raise AvatarInputError(f"{name}: file not found")
    elif not path.is_file():
        raise AvatarInputError(f"{name}: not a regular file")
    else:
        size = path.stat().st_size
    if size == 0:
        raise AvatarInputError(f"{name}: empty file")
    if size > config.max_file_bytes:
        raise AvatarInputError(
            f"{name}: file is too large ({size / 1e6:.1f} MB > {config.max_file_bytes / 1e6:.1f} MB)")
    return size


def _remote_size(location: DataLocation) -> int:
    """A URL input's size from its listing, with the same errors as a local file's."""
    try:
        info = location.info()
    except FileNotFoundError:
        raise AvatarInputError(f"{location.name}: file not found") from None
    except (OSError, ValueError) as error:
        raise AvatarInputError(f"{location.name}: cannot be read ({error})") from None
    if info.get("type") != "file":
        raise AvatarInputError(f"{location.name}: not a regular file")
    return int(info.get("size") or 0)


def as_input_file(path: str | os.PathLike | DataLocation) -> InputFile:
    """A manifest value or path as an input: a DataLocation for a URL, else a local Path."""
    if isinstance(path, DataLocation):
        return path
    return DataLocation(path) if is_url(path) else Path(path)


@contextlib.contextmanager
def decodable_file(path: InputFile) -> Iterator[Path]:
    """A local file to decode: the path itself, or a URL input fetched into a temporary file."""
    if isinstance(path, DataLocation):
        with path.local_copy() as local:
            yield local
    else:
        yield path


def load_image(path: str | os.PathLike | DataLocation, config: IngestConfig) -> np.ndarray:
    """Decode an image file to an H×W×3 uint8 RGB array, upright according to its EXIF orientation."""
    source = as_input_file(path)
    check_input_file(source, config)
    with decodable_file(source) as local:
        return _decode_image(local, source.name, config)


def precheck_input(value: str, base_dir: str | os.PathLike, config: IngestConfig, image: bool) -> None:
    """The checks ingest makes on an input before decoding it, cheap enough to run for every row while a run
    is planned: an allowed path, a regular non-empty file within the size limit, and for a local image a
    header Pillow knows, within the pixel limit. Raises the AvatarInputError ingest would raise."""
    source = resolve_input_path(value, base_dir, config)
    check_input_file(source, config)
    if image and isinstance(source, Path):
        _decode_image(source, source.name, config, header_only=True)


def _decode_image(path: Path, name: str, config: IngestConfig, header_only: bool = False) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked below; Pillow's bomb warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise AvatarInputError(f"{name}: image has no pixels ({width}x{height})")
                if width * height > config.max_image_pixels:
                    raise AvatarInputError(
                        f"{name}: too many pixels ({width}x{height} > {config.max_image_pixels} pixels)")
                if header_only:
                    return None
                image.load()
                upright = ImageOps.exif_transpose(image)
                rgb = _eight_bit(upright, name).convert("RGB")
                pixels = np.asarray(rgb, dtype=np.uint8)
    except AvatarInputError:
        raise
    except Image.DecompressionBombError as error:
        raise AvatarInputError(f"{name}: too many pixels ({error})") from error
    except UnidentifiedImageError as error:
        raise AvatarInputError(f"{name}: not an image or an unsupported image format") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise AvatarInputError(f"{name}: corrupt image ({error})") from error
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise AvatarInputError(f"{name}: could not decode to an RGB image")
    return np.ascontiguousarray(pixels)


# Pillow's single-channel modes wider than 8 bits, and the largest value of each.
_WIDE_GREY_MAXIMUM = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def _eight_bit(image: Image.Image, name: str) -> Image.Image:
    """16-bit, 32-bit and float greys scaled to 8 bits: Pillow's convert("RGB") clips them at 255, so a
    16-bit grey photo would turn all white."""
    if image.mode not in _WIDE_GREY_MAXIMUM:
        return image
    values = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise AvatarInputError(f"{name}: image holds invalid pixel values (NaN or infinity)")
    # A 32-bit or float image whose values pass the usual range is scaled by its own maximum.
    top = max(_WIDE_GREY_MAXIMUM[image.mode], float(values.max(initial=0.0)))
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    """Duration the container or stream header claims, or None when it states none."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _wav_data_seconds(path: Path) -> tuple[float, float] | None:
    """(seconds the header declares, seconds the file holds) of a RIFF WAV's sample data; None for other
    files, and for a streamed WAV whose header leaves the size open."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        riff = handle.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        byte_rate = 0
        while True:
            header = handle.read(8)
            if len(header) < 8:
                return None
            kind, length = header[:4], int.from_bytes(header[4:], "little")
            if kind == b"data":
                if byte_rate <= 0 or length in (0, 0xFFFFFFFF):
                    return None
                return length / byte_rate, min(length, size - handle.tell()) / byte_rate
            body = handle.tell()
            if kind == b"fmt ":
                byte_rate = int.from_bytes(handle.read(min(length, 16))[8:12], "little")
            handle.seek(body + length + (length & 1))  # chunks are padded to even sizes


def _check_wav_length(path: Path, name: str) -> None:
    """FFmpeg measures a WAV by the bytes present, so one cut short (or whose header claims hours of sound
    over a few seconds) would pass as a shorter clip; compare the header's length with the file's."""
    lengths = _wav_data_seconds(path)
    if lengths is not None and lengths[1] < _MIN_DECODED_FRACTION * lengths[0]:
        raise AvatarInputError(f"{name}: audio is truncated or corrupt (its header declares {lengths[0]:.2f} s, "
                               f"the file holds {lengths[1]:.2f} s)")


def load_audio(path: str | os.PathLike | DataLocation, config: IngestConfig) -> np.ndarray:
    """Decode any audio file PyAV/FFmpeg reads (wav, mp3, flac, m4a/aac, ogg/opus, ...) to mono float32.

    The result is resampled to config.sample_rate. Too long, too short, silent, truncated or undecodable
    audio raises AvatarInputError; clipped audio is accepted (see audio_warnings).
    """
    source = as_input_file(path)
    check_input_file(source, config)
    with decodable_file(source) as local:
        return _decode_audio(local, source.name, config)


def _decode_audio(path: Path, name: str, config: IngestConfig) -> np.ndarray:
    rate = config.sample_rate
    max_samples = int(round(config.max_audio_seconds * rate))
    chunks: list[np.ndarray] = []
    decoded = 0
    try:
        _check_wav_length(path, name)
        with av.open(str(path), mode="r") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AvatarInputError(f"{name}: no audio stream in the file")
            declared = _declared_seconds(container, stream)
            # Reject overlong audio from the header, before decoding all of it.
            if declared is not None and declared > config.max_audio_seconds:
                raise AvatarInputError(
                    f"{name}: audio is too long ({declared:.1f} s > {config.max_audio_seconds:g} s)")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            frames = container.decode(stream)
            for frame in frames:
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    decoded += chunk.size
                if decoded > max_samples:
                    # Headers can lie or be absent; stop decoding as soon as the limit is passed.
                    raise AvatarInputError(
                        f"{name}: audio is too long (more than {config.max_audio_seconds:g} s)")
            for out in resampler.resample(None):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                decoded += chunk.size
    except AvatarInputError:
        raise
    except av.error.FFmpegError as error:
        raise AvatarInputError(f"{name}: not a readable audio file or corrupt ({error.strerror or error})") from error
    except (OSError, ValueError) as error:
        raise AvatarInputError(f"{name}: not a readable audio file or corrupt ({error})") from error

    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    seconds = audio.size / rate
    if decoded > max_samples:
        raise AvatarInputError(f"{name}: audio is too long ({seconds:.1f} s > {config.max_audio_seconds:g} s)")
    if declared is not None and seconds < _MIN_DECODED_FRACTION * declared:
        raise AvatarInputError(
            f"{name}: audio is truncated or corrupt (decoded {seconds:.2f} s of a declared {declared:.2f} s)")
    if seconds < config.min_audio_seconds:
        raise AvatarInputError(f"{name}: audio is too short ({seconds:.2f} s < {config.min_audio_seconds:g} s)")
    if not np.all(np.isfinite(audio)):
        raise AvatarInputError(f"{name}: audio decodes to invalid sample values")
    check_audible(audio, config, name=name)
    return audio


# Samples squared and summed at once: a block, not a whole long clip (float64 copies of 15 minutes are 100s of MB).
_ENERGY_BLOCK = 1 << 20


def _energy_before(samples: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The sum of squared samples before each position (0 at position 0), block by block."""
    order = np.argsort(positions, kind="stable")
    found = np.zeros(positions.size, np.float64)
    carry, cursor = 0.0, 0
    ordered = positions[order]
    while cursor < ordered.size and ordered[cursor] == 0:
        cursor += 1
    for first in range(0, samples.size, _ENERGY_BLOCK):
        part = samples[first:first + _ENERGY_BLOCK].astype(np.float64)
        running = np.cumsum(part * part) + carry
        last = first + part.size
        stop = int(np.searchsorted(ordered, last, side="right"))
        found[order[cursor:stop]] = running[ordered[cursor:stop] - first - 1]
        cursor, carry = stop, float(running[-1])
    return found


def loudest_window_dbfs(audio: np.ndarray, sample_rate: int, window_seconds: float = _LOUDNESS_WINDOW_S) -> float:
    """RMS level (dB full scale) of the loudest window of the clip; -inf for digital silence."""
    samples = np.asarray(audio).reshape(-1)
    if samples.size == 0:
        return float("-inf")
    window = max(1, min(samples.size, int(round(window_seconds * sample_rate))))
    # Windows hop by a quarter window: fine enough not to miss a loud burst.
    hop = max(1, window // 4)
    starts = np.arange(0, samples.size - window + 1, hop)
    power = _energy_before(samples, np.concatenate([starts, starts + window]))
    mean_power = (power[starts.size:] - power[:starts.size]) / window
    peak = float(mean_power.max())
    return float(10.0 * np.log10(peak)) if peak > 0 else float("-inf")


def check_audible(audio: np.ndarray, config: IngestConfig, name: str = "audio") -> None:
    """Raise AvatarInputError when even the loudest 100 ms of the clip is below config.silence_rms_dbfs."""
    level = loudest_window_dbfs(audio, config.sample_rate)
    if level < config.silence_rms_dbfs:
        shown = "-inf" if not np.isfinite(level) else f"{level:.1f}"
        raise AvatarInputError(
            f"{name}: audio is silent (loudest 100 ms at {shown} dBFS < {config.silence_rms_dbfs:g} dBFS)")


def clipping_fraction(audio: np.ndarray) -> float:
    """Fraction of samples whose magnitude reaches full scale (clipped)."""
    samples = np.asarray(audio).reshape(-1)
    if samples.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(samples) >= _CLIP_LEVEL) / samples.size)


def audio_warnings(audio: np.ndarray, config: IngestConfig | None = None) -> list[str]:
    """Human-readable warnings about accepted audio (currently: clipping)."""
    config = config or IngestConfig()
    notes: list[str] = []
    clipped = clipping_fraction(audio)
    if clipped > config.clipping_warn_fraction:
        notes.append(f"audio is clipped: {clipped * 100:.2f}% of samples at full scale")
    return notes
