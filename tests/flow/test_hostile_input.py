"""Hostile input, as a table: one manifest whose rows are each a kind of bad (or merely unusual)
input, beside good rows, run once through the `avatarflow produce` command at 64². Every bad row
must end with a one-line error naming its stage, and every good or unusual-but-valid row must
finish. Manifest-level faults (bad columns, empty, binary, misnamed, a folder) are checked on the
command alone: it exits 2 with one message and never starts the pipeline."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import wave
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infra.prefect_server import stop_server
from tests.conftest import free_port, sample

COLUMNS = ["id", "portrait", "text", "audio", "video", "language", "style", "fps", "resolution"]
NON_UTF8 = "\x00non-utf8\x00"
"""Placeholder replaced by raw Latin-1 bytes after the manifest is written as UTF-8."""
SHELL_TEXT = 'Hi $(touch @WORK@/PWNED_A); `touch @WORK@/PWNED_B` | tee PWNED_C && rm -rf "$HOME/x" > PWNED_D'
"""Script text a shell would act on: a PWNED_* file in the test's folder would mean it had run."""
PWNED = ("PWNED_A", "PWNED_B", "PWNED_C", "PWNED_D", "PWNED_E")


@dataclass(frozen=True)
class Case:
    """One manifest row and what must become of it: finish, or fail at `stage` with `fragment` in its error."""

    id: str
    values: dict = field(default_factory=dict)
    stage: str | None = None
    fragment: str = ""


def good(**values) -> dict:
    return {"portrait": "face.jpg", "text": "Hi.", "resolution": "64", **values}


CASES = [
    # Good rows and valid-but-unusual ones: they must finish.
    Case("good", good()),
    Case("cmyk-arabic", good(portrait="cmyk.jpg", text="\u0645\u0631\u062d\u0628\u0627", language="ar")),
    Case("rgb16-emoji", good(portrait="rgb16.png", text="Hi \U0001F600 there \U0001F44B")),
    Case("grey16-shell", good(portrait="grey16.png", text=SHELL_TEXT)),
    Case("grey8-hebrew", good(portrait="grey8.jpg", text="\u05e9\u05dc\u05d5\u05dd", language="he")),
    # Broken images.
    Case("jpeg-truncated", good(portrait="truncated.jpg"), "ingest", "truncated.jpg: corrupt image"),
    Case("jpeg-corrupt", good(portrait="corrupt.jpg"), "ingest", "corrupt.jpg:"),
    Case("png-truncated", good(portrait="truncated.png"), "ingest", "truncated.png: corrupt image"),
    Case("png-corrupt", good(portrait="corrupt.png"), "ingest", "corrupt.png: corrupt image"),
    Case("image-empty", good(portrait="empty.jpg"), "ingest", "empty.jpg: empty file"),
    Case("image-bomb", good(portrait="bomb.png"), "ingest", "bomb.png: too many pixels (7000x7000"),
    Case("image-text", good(portrait="notes.png"), "ingest", "notes.png: not an image"),
    Case("image-folder", good(portrait="folder.jpg"), "ingest", "folder.jpg: not a regular file"),
    Case("image-missing", good(portrait="missing.jpg"), "ingest", "missing.jpg: file not found"),
    Case("image-faceless", good(portrait="noface.png"), "reconstruct", "no face"),
    # Broken audio.
    Case("wav-truncated", good(text="", audio="truncated.wav"), "ingest", "truncated.wav: audio is truncated"),
    Case("wav-corrupt", good(text="", audio="corrupt.wav"), "ingest", "corrupt.wav: not a readable audio file"),
    Case("wav-empty", good(text="", audio="empty.wav"), "ingest", "empty.wav: empty file"),
    Case("flac-2h", good(text="", audio="two_hours.flac"), "ingest", "two_hours.flac: audio is too long (7200.0 s"),
    Case("wav-header-lies", good(text="", audio="lying.wav"), "ingest",
         "lying.wav: audio is truncated or corrupt (its header declares 7200.00 s, the file holds 1.00 s)"),
    Case("wav-nan", good(text="", audio="nan.wav"), "ingest", "nan.wav: audio decodes to invalid sample values"),
    Case("wav-inf", good(text="", audio="inf.wav"), "ingest", "inf.wav: audio decodes to invalid sample values"),
    Case("wav-is-image", good(text="", audio="face.jpg"), "ingest", "face.jpg: "),
    # Broken driving videos (video-only rows: the sound and the portrait come from the video).
    Case("mp4-truncated", {"video": "truncated.mp4", "resolution": "64"}, "ingest",
         "truncated.mp4: not a readable video or corrupt"),
    Case("mp4-corrupt", {"video": "corrupt.mp4", "resolution": "64"}, "ingest",
         "corrupt.mp4: not a readable video or corrupt"),
    Case("mp4-empty", {"video": "empty.mp4", "resolution": "64"}, "ingest", "empty.mp4: empty file"),
    Case("mp4-no-video", {"video": "sound.mp4", "resolution": "64"}, "ingest", "sound.mp4: no video stream"),
    Case("mp4-faceless", {"video": "noface.mp4", "resolution": "64"}, "track",
         "noface.mp4: a face was found in 0% of the video's frames"),
    # Paths that leave the input roots, or try to run something.
    Case("path-symlink", good(portrait="escape.jpg"), "ingest", "escape.jpg: path is outside the allowed input"),
    Case("path-dotdot", good(portrait="../elsewhere/face.jpg"), "ingest", "face.jpg: path is outside the allowed input"),
    Case("path-absolute", good(portrait="@ELSEWHERE@/face.jpg"), "ingest", "face.jpg: path is outside the allowed input"),
    Case("path-etc", good(portrait="/etc/passwd"), "ingest", "passwd: path is outside the allowed input"),
    Case("path-shell", good(portrait="$(touch @WORK@/PWNED_E).jpg"), "ingest", "PWNED_E).jpg: file not found"),
    # Ids.
    Case("a/b", good(), "manifest", "id must be 1-64 characters"),
    Case("..\\evil", good(), "manifest", "id must be 1-64 characters"),
    Case('=HYPERLINK("http://example.com","x")', good(), "manifest", "id must be 1-64 characters"),
    Case("good", good(text="Second row with the same id."), "manifest", "duplicate id 'good'"),
    # Text, language and settings.
    Case("text-non-utf8", good(text=f"caf{NON_UTF8}"), "manifest", "column 'text' is not valid UTF-8"),
    Case("text-too-long", good(text="word " * 5000), "ingest", "text is too long"),
    Case("language-unknown", good(language="xx-klingon"), "ingest", "unknown language or voice 'xx-klingon'"),
    Case("fps-absurd", good(fps="99999"), "manifest", "fps must be between 1 and 60"),
    Case("resolution-absurd", good(resolution="1000000000"), "manifest", "resolution must be between 64 and 2048"),
    Case("style-unknown", good(style="oilx"), "style", "unknown style preset 'oilx'"),
]


def _png(path: Path, width: int, height: int, bit_depth: int, colour_type: int, rows) -> Path:
    """A PNG written chunk by chunk, so a huge image never exists in memory (rows: an iterable of bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(b"\0" + row) for row in rows) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _wav(path: Path, samples: np.ndarray, rate: int = 16000, floating: bool = False,
         claimed_frames: int | None = None) -> Path:
    """PCM16 or IEEE-float WAV; `claimed_frames` makes the header lie about the length."""
    data = samples.astype("<f4").tobytes() if floating else np.clip(samples * 32767, -32768, 32767).astype("<i2").tobytes()
    width = 4 if floating else 2
    size = (claimed_frames if claimed_frames is not None else samples.size) * width
    fmt = struct.pack("<HHIIHH", 3 if floating else 1, 1, rate, rate * width, width, 8 * width)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", size) + data)
    return path


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-v", "error", *args], check=True, timeout=120)


def build_inputs(work: Path) -> tuple[Path, Path]:
    """Write every input file of CASES and the manifest; returns (manifest, the folder outside the roots)."""
    inputs = work / "inputs"
    elsewhere = work / "elsewhere"
    inputs.mkdir()
    elsewhere.mkdir()
    with Image.open(sample("portraits", "sfhq_pt1_00000161.jpg")) as source:
        face = source.convert("RGB").resize((256, 256), Image.LANCZOS)
    face.save(inputs / "face.jpg", quality=92)
    face.save(elsewhere / "face.jpg", quality=92)
    (inputs / "escape.jpg").symlink_to(elsewhere / "face.jpg")
    face.convert("CMYK").save(inputs / "cmyk.jpg", quality=92)
    face.convert("L").save(inputs / "grey8.jpg", quality=92)
    grey16 = (np.asarray(face.convert("L"), dtype=np.uint16) * 257).astype(">u2")
    _png(inputs / "grey16.png", 256, 256, 16, 0, (row.tobytes() for row in grey16))
    rgb16 = (np.asarray(face, dtype=np.uint16) * 257).astype(">u2")
    _png(inputs / "rgb16.png", 256, 256, 16, 2, (row.tobytes() for row in rgb16))
    jpeg, png = (inputs / "face.jpg").read_bytes(), io.BytesIO()
    face.save(png, format="PNG")
    png = png.getvalue()
    (inputs / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    # A JPEG whose Huffman tables are overwritten: the header parses, the scan cannot be decoded.
    dht = jpeg.index(b"\xff\xc4")
    (inputs / "corrupt.jpg").write_bytes(jpeg[:dht + 4] + bytes(200) + jpeg[dht + 204:])
    (inputs / "truncated.png").write_bytes(png[: len(png) // 2])
    idat = png.index(b"IDAT") + 4
    (inputs / "corrupt.png").write_bytes(png[:idat + 100] + bytes(range(256)) * 4 + png[idat + 1124:])
    for name in ("empty.jpg", "empty.wav", "empty.mp4"):
        (inputs / name).write_bytes(b"")
    # 49 million pixels from a file of about 50 KB: rejected from its header, before decoding.
    _png(inputs / "bomb.png", 7000, 7000, 8, 0, (bytes(7000) for _ in range(7000)))
    (inputs / "notes.png").write_text("not an image at all\n")
    (inputs / "folder.jpg").mkdir()
    Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))).convert("RGB").save(inputs / "noface.png")

    speech = _tone(1.5)
    wav = _wav(inputs / "speech.wav", speech).read_bytes()
    (inputs / "truncated.wav").write_bytes(wav[: len(wav) // 4])
    (inputs / "corrupt.wav").write_bytes(b"RIFF\xff\xff\xff\xffWAVEfmt " + bytes(range(256)) * 8)
    # Two hours of 8 kHz silence in 1.3 MB of FLAC: refused from its header, before decoding.
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "7200", "-c:a", "flac", str(inputs / "two_hours.flac"))
    # A WAV header claiming two hours over 1 s of sound.
    _wav(inputs / "lying.wav", _tone(1.0), claimed_frames=7200 * 16000)
    nan, inf = speech.copy(), speech.copy()
    nan[4000:4100], inf[4000:4100] = np.nan, np.inf
    _wav(inputs / "nan.wav", nan, floating=True)
    _wav(inputs / "inf.wav", inf, floating=True)

    clip = inputs / "clip.mp4"
    _ffmpeg("-i", str(sample("video", "lp_d0.mp4")), "-t", "1", "-vf", "scale=128:-2", "-an", "-c:v", "libx264",
            str(clip))
    mp4 = clip.read_bytes()
    (inputs / "truncated.mp4").write_bytes(mp4[: len(mp4) // 3])
    (inputs / "corrupt.mp4").write_bytes(mp4[:8] + bytes(range(256)) * 16 + mp4[8 + 4096:])
    _ffmpeg("-i", str(inputs / "speech.wav"), "-c:a", "aac", str(inputs / "sound.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x96:rate=10", "-t", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264",
            str(inputs / "noface.mp4"))

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for case in CASES:
        values = {key: str(value).replace("@ELSEWHERE@", str(elsewhere)).replace("@WORK@", str(work))
                  for key, value in case.values.items()}
        writer.writerow([case.id] + [values.get(column, "") for column in COLUMNS[1:]])
    manifest = inputs / "manifest.csv"
    manifest.write_bytes(text.getvalue().encode("utf-8").replace(NON_UTF8.encode("utf-8"), b"\xe9"))
    return manifest, elsewhere


def run_cli(*args: str, cwd: Path, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avatarflow.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.flow
class TestHostileRows:
    """The one produce run over CASES."""

    @pytest.fixture(scope="class")
    def produced(self, tmp_path_factory):
        work = tmp_path_factory.mktemp("hostile")
        manifest, _ = build_inputs(work)
        data_dir = work / "data"
        port = free_port()  # given the way a deployment gives it, so the command must say which port it uses
        try:
            done = run_cli("produce", str(manifest), "--data-dir", str(data_dir), cwd=manifest.parent,
                           env={"AVATARFLOW_PREFECT_PORT": str(port)})
        finally:
            stop_server(data_dir / "prefect")
        summaries = list((data_dir / "outputs").glob("*/summary.json"))
        assert summaries, done.stdout[-3000:] + done.stderr[-3000:]
        summary = json.loads(summaries[0].read_text())
        yield {"done": done, "summary": summary, "work": work, "folder": Path(summary["output_folder"]), "port": port}

    def test_every_case_is_one_row_of_the_manifest(self):
        assert len(CASES) >= 30 and len({(c.id, json.dumps(c.values)) for c in CASES}) == len(CASES)
        assert sum(c.stage is not None for c in CASES) >= 25

    def test_good_and_unusual_rows_finish(self, produced):
        finished = set(produced["summary"]["finished"])
        assert finished == {c.id for c in CASES if c.stage is None}, produced["summary"]["failed"]
        for avatar in finished:
            assert (produced["folder"] / avatar / "talk.mp4").stat().st_size > 0

    @pytest.mark.parametrize("case", [c for c in CASES if c.stage is not None], ids=lambda c: c.id)
    def test_each_bad_row_gets_one_line_error(self, produced, case):
        failures = [f for f in produced["summary"]["failed"] if f["id"] == case.id]
        if case.stage == "manifest" and case.id == "good":
            failures = [f for f in failures if f["stage"] == "manifest"]
        assert len(failures) == 1, (case.id, produced["summary"]["failed"])
        failure = failures[0]
        assert (failure["stage"], case.fragment in failure["error"]) == (case.stage, True), failure
        assert "\n" not in failure["error"] and "Traceback" not in failure["error"]

    def test_quarantine_lists_every_bad_row_and_defuses_formulas(self, produced):
        with open(produced["folder"] / "quarantine.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == sum(c.stage is not None for c in CASES)
        for row in rows:
            for value in row.values():
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row
        assert "'=HYPERLINK(\"http://example.com\",\"x\")" in [row["id"] for row in rows]

    def test_no_traceback_no_stray_log_and_nothing_executed(self, produced):
        done = produced["done"]
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-3000:]
        assert "Traceback" not in out and "NoneType: None" not in out, out[-5000:]
        for name in PWNED:
            assert not list(produced["work"].rglob(name)) and not (Path.cwd() / name).exists(), name
        lines = [line for line in done.stdout.splitlines() if line.startswith("  line ")]
        assert len(lines) == sum(c.stage is not None for c in CASES)
        assert f"local server (127.0.0.1:{produced['port']})" in done.stdout and "default port" not in out
        assert "Dask dashboard" not in out  # off unless AVATARFLOW_DASK_DASHBOARD says otherwise


# Manifest-level faults: the command refuses the file before anything starts.

MANIFEST_FAULTS = {
    "unknown column": ("m.csv", b"id,portrait,text,mood\na,face.jpg,hi,happy\n", ["unknown column", "'mood'"]),
    "missing column": ("m.csv", b"portrait,text\nface.jpg,hi\n", ["missing required column", "id"]),
    "no face column": ("m.csv", b"id,text\na,hi\n", ["needs a 'portrait' column"]),
    "duplicate column": ("m.csv", b"id,portrait,text,text\na,face.jpg,hi,bye\n", ["duplicate column", "'text'"]),
    "empty file": ("m.csv", b"", ["manifest is empty"]),
    "header only": ("m.csv", b"id,portrait,text\n", ["has no rows"]),
    "binary garbage": ("m.csv", bytes(np.random.default_rng(3).integers(128, 256, 3000, dtype=np.uint8)),
                       ["not a CSV text file"]),
    "binary with NUL": ("m.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), ["not a CSV text file"]),
    "CSV named .parquet": ("m.parquet", b"id,portrait,text\na,face.jpg,hi\n", ["not a Parquet file", "CSV"]),
    "garbage .parquet": ("m.parquet", bytes(range(256)) * 4, ["not a Parquet file"]),
    "unterminated quote": ("m.csv", b'id,portrait\n"a,face.jpg\n', ["not a readable CSV"]),
}


@pytest.mark.parametrize("name", sorted(MANIFEST_FAULTS))
def test_manifest_fault_exits_2_with_one_line(tmp_path, name):
    filename, content, fragments = MANIFEST_FAULTS[name]
    manifest = tmp_path / filename
    manifest.write_bytes(content)
    done = run_cli("produce", str(manifest), "--data-dir", str(tmp_path / "data"), "--prefect-port",
                   str(free_port()), cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: "), done.stderr
    assert all(fragment in errors[0] for fragment in fragments), errors[0]
    assert "Traceback" not in done.stderr and "\ufffd" not in errors[0] and "\\x" not in errors[0]
    assert not (tmp_path / "data" / "prefect").exists()  # no server was started


def test_folder_as_manifest_says_it_is_a_folder(tmp_path):
    folder = tmp_path / "manifest.csv"
    folder.mkdir()
    done = run_cli("produce", str(folder), "--data-dir", str(tmp_path / "data"), cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: manifest is a directory, not a file: {folder}"]
