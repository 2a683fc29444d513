"""The run dashboard in a real browser: headless Chromium opens report.html from a copied run
folder (offline, links relative), plays the videos' metadata, and draws the chart and tables."""

from __future__ import annotations

import re
import shutil
import subprocess
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from stores.report import render_report_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (infra/setup.sh installs it)")

VIDEO_SECONDS = 1.0
FPS = 25
SIZE = 128
VOID_TAGS = {"meta", "img", "br", "input", "link", "source", "hr", "col", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: "Node | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts) + "".join(child.text for child in self.children)

    def find_all(self, tag: str, **attrs: str) -> list["Node"]:
        found = [self] if self.tag == tag and all(self.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()) else []
        for child in self.children:
            found += child.find_all(tag, **attrs)
        return found

    def has_class(self, name: str) -> bool:
        return name in self.attrs.get("class", "").split()


class TreeBuilder(HTMLParser):
    """Chromium's --dump-dom serialises the live DOM; this rebuilds it as a small tree."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID_TAGS:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.parts.append(data)


def write_talk_video(path: Path, image: np.ndarray) -> None:
    """A short H.264 + AAC clip like the render stage's: the portrait drifting, a tone for sound."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=48000, layout="mono")
        for index in range(int(VIDEO_SECONDS * FPS)):
            frame = av.VideoFrame.from_ndarray(np.roll(image, index, axis=1), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
        samples = (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(48000 * VIDEO_SECONDS)) / 48000)).astype(np.float32)
        for start in range(0, samples.size, 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate = 48000
            chunk.pts = start
            chunk.time_base = Fraction(1, 48000)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())


@pytest.fixture()
def run_folder(tmp_path):
    """A run folder as a produce run leaves it: two avatars with poster and video, one reused, two
    quarantined rows (one error carrying markup), and the report written beside them."""
    from PIL import Image
    from skimage import data

    run = "nightly-3f9a1c2b7e"
    folder = tmp_path / "data" / "outputs" / run
    portrait = np.asarray(Image.fromarray(data.astronaut()).resize((SIZE, SIZE)))
    avatars = []
    for line, (avatar, seconds, reused) in enumerate([
        ("texter", {"ingest": 1.8, "reconstruct": 3.1, "animate": 0.9, "render": 6.4}, False),
        ("speaker", {"ingest": 0.7, "reconstruct": 2.9, "style": 4.2, "animate": 1.3, "render": 3.2}, False),
        ("returning", {"ingest": 0.5, "reconstruct": 2.0, "animate": 0.6, "render": 2.1}, True),
    ], start=2):
        image = np.ascontiguousarray(np.rot90(portrait, k=line - 2))
        (folder / avatar).mkdir(parents=True)
        Image.fromarray(image).save(folder / avatar / "poster.png")
        write_talk_video(folder / avatar / "talk.mp4", image)
        avatars.append({
            "id": avatar, "line": line, "status": "complete", "reused": reused, "seconds": seconds,
            "warnings": ["2 faces found in the portrait; using the largest"] if avatar == "speaker" else [],
            "frames": int(VIDEO_SECONDS * FPS), "video_seconds": VIDEO_SECONDS,
            "outputs": {kind: str(folder / avatar / name) for kind, name in
                        (("video", "talk.mp4"), ("poster", "poster.png"), ("glb", "avatar.glb"), ("blend", "avatar.blend"))},
        })
    failures = [
        {"line": 5, "id": "broken", "stage": "ingest", "error": "<b>empty.jpg</b>: empty file"},
        {"line": 6, "id": "", "stage": "manifest", "error": "duplicate id 'texter' (already used by an earlier row)"},
    ]
    summary = {"run": run, "preset": "photo", "wall_seconds": 9.5, "video_seconds": 2 * VIDEO_SECONDS,
               "realtime_factor": 2 * VIDEO_SECONDS / 9.5}
    (folder / "report.html").write_text(render_report_html(run, avatars, failures, summary), encoding="utf-8")
    return {"folder": folder, "avatars": avatars, "failures": failures, "summary": summary}


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
               f"--user-data-dir={profile}", "--virtual-time-budget=8000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_report_plays_and_draws_offline_from_a_copied_run_folder(run_folder, tmp_path):
    # Copied whole, as a sync to another machine would: every link must still resolve.
    copy = tmp_path / "elsewhere" / run_folder["folder"].name
    shutil.copytree(run_folder["folder"], copy)
    shutil.rmtree(run_folder["folder"])
    report = copy / "report.html"

    dumped = chromium("--dump-dom", report.as_uri(), profile=tmp_path / "chromium-profile")
    assert dumped.returncode == 0 and "</html>" in dumped.stdout, dumped.stderr[-2000:]
    builder = TreeBuilder()
    builder.feed(dumped.stdout)
    dom = builder.root

    # Nothing is fetched from elsewhere: every src and href is relative to the report.
    for node in dom.find_all("script") + dom.find_all("link") + dom.find_all("img") + dom.find_all("video") + dom.find_all("a"):
        for attribute in ("src", "href", "poster"):
            value = node.attrs.get(attribute)
            if value is not None:
                assert not re.match(r"^([a-z]+:|/)", value), f"{node.tag} {attribute}={value!r} is not relative"
                assert (copy / value).is_file() or value.endswith((".glb", ".blend")), value

    # A playable video per avatar: the browser read its metadata (the inline script records it).
    videos = {v.parent.attrs["data-avatar"]: v for v in dom.find_all("video")}
    assert set(videos) == {"texter", "speaker", "returning"}
    for avatar, video in videos.items():
        assert video.attrs["src"] == f"{avatar}/talk.mp4" and video.attrs["poster"] == f"{avatar}/poster.png"
        assert "data-error" not in video.attrs, f"{avatar}: the browser could not play the video"
        assert abs(float(video.attrs["data-duration"]) - VIDEO_SECONDS) < 0.1, video.attrs
        state = [n for n in video.parent.find_all("small") if n.has_class("video-state")][0]
        assert state.text == f"playable, {SIZE}×{SIZE}"

    # The chart: one bar per avatar and stage it ran, widths in proportion to the seconds.
    [chart] = dom.find_all("svg", id="stage-chart")
    bars = [b for b in chart.find_all("rect") if b.has_class("bar")]
    expected = {(a["id"], stage): s for a in run_folder["avatars"] for stage, s in a["seconds"].items()}
    assert {(b.attrs["data-avatar"], b.attrs["data-stage"]) for b in bars} == set(expected)
    per_second = {float(b.attrs["width"]) / expected[(b.attrs["data-avatar"], b.attrs["data-stage"])] for b in bars}
    assert max(per_second) - min(per_second) < 0.2, per_second
    assert {n.attrs["data-stage"] for n in dom.find_all("span") if n.has_class("legend-item")} == \
        {"ingest", "reconstruct", "style", "animate", "render"}

    # The real-time factor and the quarantine table, the markup in an error shown as text.
    [realtime] = dom.find_all("div", id="stat-realtime")
    assert realtime.find_all("b")[0].text == f"{run_folder['summary']['realtime_factor']:.2f}×"
    [table] = dom.find_all("table", id="quarantine")
    rows = [[cell.text for cell in row.find_all("td")] for row in table.find_all("tr") if row.has_class("quarantined")]
    assert rows == [[str(f["line"]), f["id"], f["stage"], f["error"]] for f in run_folder["failures"]]
    assert not table.find_all("b"), "an error message became markup"
    assert "using the largest" in dom.text

    screenshot = tmp_path / "report.png"
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1280,1500", report.as_uri(),
                    profile=tmp_path / "chromium-profile")
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.size == (1280, 1500)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert screenshot.stat().st_size > 30_000
    # Not a blank page: the header, bars and posters give many distinct colours.
    assert pixels.std() > 30 and len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 500
