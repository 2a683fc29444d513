"""The run's `report.html`: a self-contained dashboard (posters, playable videos, per-stage timings
as an inline SVG chart, the real-time factor, the quarantine table).

Pure string building: no IO, no scripts, fonts or styles from elsewhere, so the page works offline;
one inline script marks each video playable (with its size) once the browser has read it, or
says it cannot be played.
Every link is relative to the report (`<avatar>/talk.mp4`), so the run folder can be copied or
synced whole. Everything that comes from a manifest or an error message is escaped.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Mapping
from urllib.parse import quote

# Pipeline order, so bars and columns read like the flow; stages not listed follow in the order met.
STAGE_ORDER = ("ingest", "generate", "refine", "reconstruct", "style", "animate", "render", "export")
STAGE_COLOURS = {
    "ingest": "#4e79a7", "generate": "#b07aa1", "refine": "#ff9da7", "reconstruct": "#f28e2b",
    "style": "#edc948", "animate": "#59a14f", "render": "#e15759", "export": "#79706e",
}
EXTRA_COLOURS = ("#76b7b2", "#9c755f", "#bab0ac", "#86bcb6")
DOWNLOADS = (("video", "MP4"), ("glb", "GLB"), ("blend", ".blend"))
MAX_ROWS = 1000
"""Avatars (cards and chart bars) and quarantined rows shown per page; a bigger run's page says how
many are left out, and quarantine.csv and summary.json list every row."""

# Chart geometry, in SVG user units.
CHART_WIDTH = 760
LABEL_WIDTH = 150
VALUE_WIDTH = 70
BAR_HEIGHT = 18
ROW_HEIGHT = 28
AXIS_HEIGHT = 26

PAGE_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d232b}
header{background:#1d232b;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#b8c0cc}
main{padding:18px 28px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:14px 18px;margin-bottom:18px}
h2{font-size:17px;margin:0 0 10px}
.stats{display:flex;flex-wrap:wrap;gap:12px}
.stat{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:10px 16px;min-width:120px}
.stat b{display:block;font-size:22px}
.stat span{color:#5b6573;font-size:13px}
.gallery{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;width:272px;background:#fafbfc;border:1px solid #e1e4e8;border-radius:6px;padding:8px}
figure video,figure img{width:256px;height:256px;object-fit:contain;background:#000;border-radius:4px;display:block}
figcaption{font-size:13px;margin-top:6px}
figcaption ul{margin:4px 0 0;padding-left:18px;color:#a15c00}
.tag{background:#e1e4e8;border-radius:3px;padding:0 4px;font-size:11px}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #d7dbe0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:13px;margin-top:6px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.none{color:#5b6573}
.video-error{color:#b00020}
.capped{color:#a15c00}
"""
# Marks each video with what the browser found in it (length and size), or that it cannot be played.
PAGE_SCRIPT = """
document.querySelectorAll("video.avatar-video").forEach(function (video) {
  var note = video.parentElement.querySelector(".video-state");
  function ready() {
    video.dataset.duration = video.duration.toFixed(2);
    note.textContent = "playable, " + video.videoWidth + "\\u00d7" + video.videoHeight;
  }
  function failed() {
    video.dataset.error = video.error ? String(video.error.code) : "unknown";
    note.textContent = "this video cannot be played here";
    note.className = "video-state video-error";
  }
  // The parser may yield before this script runs, so the video may already have loaded or failed.
  if (video.error) { failed(); } else if (video.readyState >= 1) { ready(); }
  video.addEventListener("loadedmetadata", ready);
  video.addEventListener("error", failed);
});
"""


def _text(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _href(avatar_id: str, written_path: Any) -> str:
    """A link relative to the report: the avatar's folder and the written file's own name."""
    name = str(written_path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return _text(f"{quote(str(avatar_id), safe='')}/{quote(name, safe='')}")


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f} s"


def stage_names(avatars: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every stage some avatar has a time for, in pipeline order."""
    seen: list[str] = []
    for avatar in avatars:
        for stage in avatar.get("seconds", {}) or {}:
            if stage not in seen:
                seen.append(stage)
    known = [stage for stage in STAGE_ORDER if stage in seen]
    return known + [stage for stage in seen if stage not in STAGE_ORDER]


def stage_colour(stage: str, stages: list[str]) -> str:
    if stage in STAGE_COLOURS:
        return STAGE_COLOURS[stage]
    extras = [s for s in stages if s not in STAGE_COLOURS]
    return EXTRA_COLOURS[extras.index(stage) % len(EXTRA_COLOURS)] if stage in extras else EXTRA_COLOURS[0]


def axis_step(maximum: float, target_ticks: int = 5) -> float:
    """A 1-2-5 step that divides [0, maximum] into about `target_ticks` intervals."""
    if maximum <= 0:
        return 1.0
    raw = maximum / target_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def timing_chart_svg(avatars: list[Mapping[str, Any]]) -> str:
    """Horizontal stacked bars, one per avatar, one segment per stage (seconds the stage ran).
    Stages of one avatar may overlap in time (style runs beside animate), so a bar is the work
    done, not the avatar's wall time."""
    timed = [a for a in avatars if a.get("seconds")]
    if not timed:
        return '<p class="none">No stage timings in this run.</p>'
    stages = stage_names(timed)
    totals = [sum(float(a["seconds"].get(stage, 0.0)) for stage in stages) for a in timed]
    step = axis_step(max(totals))
    axis_max = step * max(1, math.ceil(max(totals) / step))
    plot_width = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    scale = plot_width / axis_max
    height = AXIS_HEIGHT + ROW_HEIGHT * len(timed) + 4

    parts = [f'<svg id="stage-chart" role="img" width="{CHART_WIDTH}" '
             f'height="{height}" viewBox="0 0 {CHART_WIDTH} {height}" font-size="12" style="max-width:100%;height:auto" '
             f'aria-label="Seconds per stage and avatar">']
    ticks = int(round(axis_max / step))
    for index in range(ticks + 1):
        x = LABEL_WIDTH + index * step * scale
        parts.append(f'<line x1="{x:.1f}" y1="{AXIS_HEIGHT - 6}" x2="{x:.1f}" y2="{height - 4}" stroke="#e1e4e8"/>')
        parts.append(f'<text x="{x:.1f}" y="{AXIS_HEIGHT - 10}" text-anchor="middle" fill="#5b6573">'
                     f'{index * step:g} s</text>')
    for row, (avatar, total) in enumerate(zip(timed, totals)):
        y = AXIS_HEIGHT + row * ROW_HEIGHT + (ROW_HEIGHT - BAR_HEIGHT) / 2
        name = _text(avatar.get("id", ""))
        label = name + (" (reused)" if avatar.get("reused") else "")
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT - 5:.1f}" text-anchor="end">{label}</text>')
        x = float(LABEL_WIDTH)
        for stage in stages:
            seconds = float(avatar["seconds"].get(stage, 0.0))
            if seconds <= 0:
                continue
            width = seconds * scale
            parts.append(
                f'<rect class="bar" data-avatar="{name}" data-stage="{_text(stage)}" data-seconds="{seconds:.3f}" '
                f'x="{x:.1f}" y="{y:.1f}" width="{max(width, 0.5):.1f}" height="{BAR_HEIGHT}" '
                f'fill="{stage_colour(stage, stages)}"><title>{name} · {_text(stage)}: {seconds:.2f} s</title></rect>')
            x += width
        parts.append(f'<text x="{x + 6:.1f}" y="{y + BAR_HEIGHT - 5:.1f}" fill="#5b6573">{total:.1f} s</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<span class="legend-item" data-stage="{_text(stage)}"><i style="background:{stage_colour(stage, stages)}"></i>'
        f'{_text(stage)} {sum(float(a["seconds"].get(stage, 0.0)) for a in timed):.1f} s</span>'
        for stage in stages)
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def avatar_card(avatar: Mapping[str, Any]) -> str:
    """Poster and playable video (when written), downloads, timings and warnings of one avatar."""
    avatar_id = str(avatar.get("id", ""))
    written = avatar.get("outputs", {}) or {}
    poster = f' poster="{_href(avatar_id, written["poster"])}"' if "poster" in written else ""
    if "video" in written:
        # preload="metadata" reads only the header, so even a large gallery loads fast.
        media = (f'<video class="avatar-video" controls preload="metadata"{poster} '
                 f'src="{_href(avatar_id, written["video"])}" width="256" height="256"></video>')
    elif "poster" in written:
        media = f'<img src="{_href(avatar_id, written["poster"])}" alt="{_text(avatar_id)}" width="256" height="256">'
    else:
        media = ""
    links = " · ".join(f'<a href="{_href(avatar_id, written[kind])}">{label}</a>'
                       for kind, label in DOWNLOADS if kind in written)
    seconds = avatar.get("seconds", {}) or {}
    timings = ", ".join(f"{_text(stage)} {float(seconds[stage]):.1f} s" for stage in stage_names([avatar]))
    video_seconds = avatar.get("video_seconds")
    length = f" · {float(video_seconds):.1f} s video" if video_seconds else ""
    reused = ' <span class="tag">reused</span>' if avatar.get("reused") else ""
    warnings = "".join(f"<li>{_text(w)}</li>" for w in avatar.get("warnings", []) or [])
    return (f'<figure class="avatar" data-avatar="{_text(avatar_id)}">{media}<figcaption>'
            f'<b>{_text(avatar_id)}</b>{reused}{length}<br><small class="video-state"></small><br>{links}<br>'
            f'<small>{timings}</small>'
            f'{f"<ul>{warnings}</ul>" if warnings else ""}</figcaption></figure>')


def capped_note(shown: int, total: int, what: str) -> str:
    """A line saying that only the first `shown` of `total` items are on the page."""
    if shown >= total:
        return ""
    return (f'<p class="capped">Showing the first {shown} of {total} {what}; quarantine.csv and summary.json '
            f'list every row.</p>')


def quarantine_table(failures: list[Mapping[str, Any]], max_rows: int = MAX_ROWS) -> str:
    if not failures:
        return '<p class="none">No row was quarantined.</p>'
    rows = "".join(
        f'<tr class="quarantined"><td class="num">{_text(f.get("line", ""))}</td><td>{_text(f.get("id", ""))}</td>'
        f'<td>{_text(f.get("stage", ""))}</td><td>{_text(f.get("error", ""))}</td></tr>'
        for f in failures[:max_rows])
    return (capped_note(min(max_rows, len(failures)), len(failures), "quarantined rows")
            + f'<table id="quarantine"><tr><th>line</th><th>id</th><th>stage</th><th>error</th></tr>'
            f"{rows}</table>")


def _stat(value: str, label: str, key: str) -> str:
    return f'<div class="stat" id="stat-{key}"><b>{value}</b><span>{label}</span></div>'


def render_report_html(run: str, avatars: list[Mapping[str, Any]], failures: list[Mapping[str, Any]],
                       summary: Mapping[str, Any], max_rows: int = MAX_ROWS) -> str:
    """The whole page. `avatars`: finished (or reused) avatars with `id`, `seconds` (stage →
    seconds), `outputs` (kind → written path), `video_seconds`, `warnings`, `reused`;
    `failures`: quarantine entries (`line`, `id`, `stage`, `error`); `summary`: the run summary
    (`realtime_factor`, `wall_seconds`, `video_wall_seconds`, `video_seconds`, `preset`). The counts cover every row;
    cards, bars and table rows stop at `max_rows` each, with a note."""
    realtime = summary.get("realtime_factor")
    reused = sum(1 for a in avatars if a.get("reused"))
    stats = [
        _stat(f"{len(avatars)}", f"finished ({reused} reused)", "finished"),
        _stat(f"{len(failures)}", "quarantined", "quarantined"),
        _stat("—" if realtime is None else f"{float(realtime):.2f}×", "real time (video s / wall s)", "realtime"),
        _stat(_seconds(summary.get("video_seconds")), "video rendered", "video"),
        _stat(_seconds(summary.get("wall_seconds")), "wall time", "wall"),
        _stat(_seconds(summary.get("video_wall_seconds")), "wall time to the last MP4", "video-wall"),
    ]
    preset = f" · preset {_text(summary['preset'])}" if summary.get("preset") else ""
    shown = list(avatars[:max_rows])
    cards = "".join(avatar_card(a) for a in shown) or '<p class="none">No avatar finished.</p>'
    capped = capped_note(len(shown), len(avatars), "avatars")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>avatarflow run {_text(run)}</title><style>{PAGE_STYLE}</style></head><body>"
        f"<header><h1>Run {_text(run)}</h1><p>{len(avatars)} avatar(s) finished, "
        f"{len(failures)} row(s) quarantined{preset}</p></header><main>"
        f'<div class="stats" style="margin-bottom:18px">{"".join(stats)}</div>'
        f'<section><h2>Seconds per stage</h2><p class="none">Each bar is the work done per stage; stages of '
        f'one avatar can overlap in time. The legend sums each stage over the avatars.</p>'
        f'{capped}{timing_chart_svg(shown)}</section>'
        f'<section><h2>Avatars</h2>{capped}<div class="gallery">{cards}</div></section>'
        f"<section><h2>Quarantine</h2>{quarantine_table(list(failures), max_rows)}</section>"
        f"</main><script>{PAGE_SCRIPT}</script></body></html>"
    )
