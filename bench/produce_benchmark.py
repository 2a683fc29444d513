"""The throughput benchmark: `avatarflow produce` on a fixed 20-row manifest (512², 25 fps, text and
audio rows of 2–10 s, one style row), run as a user runs it, then one long speech row on its own.

Prints, for one run: the whole-command and flow-only real-time factors (video seconds / wall
seconds), the time to the last MP4 and to the command's end, start-up, per-stage seconds, the
orchestration overhead, the peak RSS of the process tree, and the render stage's cost per frame
against a bare-Blender floor measured here, in the same run, with as many Blender processes at once
as there are workers. Then the long row's wall time, real-time factor and peak RSS. With a GPU, the
`gpu` profile runs too. The issue's "done when" targets are printed as PASS/FAIL lines; nothing is
asserted. Inputs are built at run time from the shared samples and the bundled sample.

    python bench/produce_benchmark.py [--no-long-row] [--long-minutes 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLES = REPO.parent / "shared" / "samples"
FPS, RESOLUTION = 25, 512
GIB = 2 ** 30

# "Done when" targets of the throughput issue.
TARGET_REALTIME = 1.5
TARGET_FLOOR_RATIO = 1.2
TARGET_OVERHEAD = 0.10
TARGET_LONG_ROW_BYTES = 2 * GIB

# Text rows: (language, script), each spoken in 2–10 s.
TEXT_ROWS = [
    ("en", "Good morning, and welcome to the show."),
    ("en", "Every word you hear moves my lips, frame by frame."),
    ("en", "The weather today is mild, with a light breeze from the west and clear skies by evening."),
    ("en", "Thank you for calling. Your order has shipped."),
    ("en", "I was rendered from a single photograph, on a machine with two cores and no graphics card."),
    ("en", "Please keep your seat belt fastened."),
    ("en", "Numbers such as forty two and one thousand are spoken too."),
    ("en", "Here is the news. Markets rose slightly, and the river is high after the rain."),
    ("de", "Guten Tag. Ich bin ein digitaler Doppelgänger."),
    ("fr", "Merci beaucoup, et à bientôt."),
    ("en", "Short and sweet."),
    ("en", "A digital double speaks your script in any voice that the synthesiser knows."),
]
# Audio rows: (clip, language); two rows per clip, on different portraits.
AUDIO_ROWS = [
    ("audio/en_st_RD_Radio31_000.wav", "en"),
    ("audio/en_em_echomimic_en.wav", "en"),
    ("audio/fr_st_fayu.wav", "fr"),
    ("audio/zh_st_chinese_poem1.wav", "zh"),
]
COLUMNS = ["id", "portrait", "style", "text", "audio", "transcript", "language", "fps", "resolution"]

# Which earlier stages of the same row a stage waits for (flows/produce.py); absent ones are ignored.
STAGE_DEPENDENCIES = {
    "track": ("ingest",), "generate": ("ingest", "track"), "refine": ("ingest", "track"),
    "reconstruct": ("ingest", "track", "generate", "refine"), "style": ("reconstruct",),
    "animate": ("ingest",), "capture": ("reconstruct", "style", "track"),
    "render": ("reconstruct", "style", "animate", "capture"), "export": ("reconstruct", "style", "render"),
}


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def write_benchmark_manifest(folder: Path) -> tuple[Path, list[str]]:
    """The fixed 20-row manifest: the bundled sample's rows (its style row included), then text and
    audio rows on the shared portraits. Returns (manifest, input roots)."""
    from avatarflow.samples import write_sample_manifest

    sample_manifest, roots = write_sample_manifest(folder / "sample")
    with sample_manifest.open(encoding="utf-8") as handle:
        rows = [{**row, "portrait": str((sample_manifest.parent / row["portrait"]).resolve())
                 if row["portrait"] and not Path(row["portrait"]).is_absolute() else row["portrait"]}
                for row in csv.DictReader(handle)]
    portraits = sorted((SAMPLES / "portraits").glob("sfhq_pt*.jpg"))
    if not portraits:
        raise SystemExit(f"no shared sample portraits under {SAMPLES}")
    used = 0
    for index, (language, text) in enumerate(TEXT_ROWS):
        if len(rows) >= 20 - 2 * len(AUDIO_ROWS):
            break
        rows.append({"id": f"text_{index:02d}", "portrait": str(portraits[used % len(portraits)]), "text": text,
                     "language": language})
        used += 1
    for copy in range(2):
        for clip, language in AUDIO_ROWS:
            rows.append({"id": f"audio_{Path(clip).stem}_{copy}", "portrait": str(portraits[used % len(portraits)]),
                         "audio": str(SAMPLES / clip), "language": language})
            used += 1
    return _write_manifest(folder / "benchmark.csv", rows), sorted({*roots, str(SAMPLES)})


def write_long_row_manifest(folder: Path, minutes: float, transcript: bool) -> tuple[Path, list[str], float]:
    """One speech row of `minutes` built from the shared English clips (bench/long_clip_input.py);
    returns (manifest, input roots, audio seconds)."""
    import wave

    from bench.long_clip_input import build_long_speech

    wav, words = build_long_speech(folder, minutes)
    with wave.open(str(wav)) as handle:
        seconds = handle.getnframes() / handle.getframerate()
    row = {"id": f"long_{minutes:g}min", "portrait": str(SAMPLES / "portraits" / "sfhq_pt1_00000161.jpg"),
           "audio": str(wav), "language": "en", **({"transcript": words} if transcript else {})}
    return _write_manifest(folder / "long.csv", [row]), [str(SAMPLES), str(folder)], seconds


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS} | {"fps": FPS, "resolution": RESOLUTION})
    return path


# ----------------------------------------------------------------------------------------------
# One produce run
# ----------------------------------------------------------------------------------------------

@dataclass
class ProduceRun:
    """What one `avatarflow produce` command did, as seen from outside and from its reports."""

    code: int
    command_wall: float
    peak_rss: int
    started_at: float
    data_dir: Path
    summary: dict = field(default_factory=dict)
    records: dict[str, dict[str, dict]] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    peak_kinds: dict[str, int] = field(default_factory=dict)
    """RSS by kind of process at the moment of the peak."""


def tree_rss(process: psutil.Process) -> dict[str, int]:
    """RSS of a process and all its descendants (Dask nannies and workers, Blender, ffmpeg), by kind."""
    kinds: dict[str, int] = {}
    for member in [process, *process.children(recursive=True)]:
        try:
            rss = member.memory_info().rss
            kind = _process_kind(process, member)
        except psutil.Error:
            continue
        kinds[kind] = kinds.get(kind, 0) + rss
    return kinds


def _process_kind(root: psutil.Process, member: psutil.Process) -> str:
    if member.pid == root.pid:
        return "produce command"
    line = " ".join(member.cmdline())
    for needle, kind in (("blender", "Blender"), ("prefect server", "Prefect server"), ("ffmpeg", "ffmpeg"),
                         ("ffprobe", "ffmpeg"), ("multiprocessing", "Dask processes")):
        if needle in line:
            return kind
    return "other"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_produce(manifest: Path, data_dir: Path, roots: list[str], preset: str, profile: str | None,
                workers: int | None, log: Path) -> ProduceRun:
    """Run the produce command in its own process, sampling the RSS of its process tree every 0.2 s;
    its output goes to `log`. The Prefect server is started first, as on a warm machine where the
    command reuses it (its start-up is printed apart), and stopped afterwards."""
    from infra.prefect_server import ensure_server, quiet_environment, stop_server

    port = free_port()
    server_started = time.time()
    quiet_environment()
    ensure_server(data_dir / "prefect", port=port)
    print(f"  Prefect server started in {time.time() - server_started:.1f} s (before the timed command)", flush=True)
    command = [sys.executable, "-m", "avatarflow.cli", "produce", str(manifest), "--data-dir", str(data_dir),
               "--preset", preset, "--prefect-port", str(port),
               *(["--profile", profile] if profile else []), *(["--workers", str(workers)] if workers else []),
               *[a for root in roots for a in ("--input-root", root)]]
    peak, at_peak, stop = 0, {}, threading.Event()
    started = time.time()
    with log.open("w", encoding="utf-8") as out:
        child = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        watched = psutil.Process(child.pid)

        def sample() -> None:
            nonlocal peak, at_peak
            while not stop.is_set():
                kinds = tree_rss(watched)
                if sum(kinds.values()) > peak:
                    peak, at_peak = sum(kinds.values()), kinds
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = child.wait()
        finally:
            stop.set()
            sampler.join()
            stop_server(data_dir / "prefect")
    result = ProduceRun(code, time.time() - started, peak, started, data_dir, peak_kinds=at_peak)
    summaries = list((data_dir / "outputs").glob("*/summary.json"))
    if summaries:
        result.summary = json.loads(summaries[0].read_text())
        result.summary["_written_at"] = summaries[0].stat().st_mtime
        _read_store(result)
    return result


def _read_store(result: ProduceRun) -> None:
    """Per-row stage records and frame counts of the run's finished avatars."""
    from stores.avatar_store import AvatarStore

    store = AvatarStore(str(result.data_dir / "avatars.zarr"))
    run = result.summary["run"]
    for avatar in result.summary["finished"]:
        result.records[avatar] = store.stage_records(run, avatar)
        result.frames[avatar] = int(store.avatar_group(run, avatar)["animation/weights"].shape[0])


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------

def longest_chain(records: dict[str, dict]) -> float:
    """Seconds of the longest path of stage times through one row's stages."""
    memo: dict[str, float] = {}

    def chain(stage: str) -> float:
        if stage not in memo:
            before = [chain(d) for d in STAGE_DEPENDENCIES.get(stage, ()) if d in records]
            memo[stage] = float(records[stage].get("seconds", 0.0)) + max(before, default=0.0)
        return memo[stage]

    return max((chain(stage) for stage in records), default=0.0)


def time_to_last_mp4(run: ProduceRun) -> tuple[float | None, str]:
    """Seconds from command start to the last MP4: from summary.json's video_wall_seconds (counted
    from the flow's start, which is when the summary was written less its wall time), else from the
    MP4 files' modification times."""
    summary = run.summary
    if summary.get("video_wall_seconds") is not None:
        flow_started = summary["_written_at"] - summary["wall_seconds"]
        return flow_started - run.started_at + summary["video_wall_seconds"], "summary.json"
    videos = list(Path(summary.get("output_folder", run.data_dir / "outputs")).glob("*/talk.mp4"))
    if not videos:
        return None, "no MP4"
    return max(v.stat().st_mtime for v in videos) - run.started_at, "MP4 file times"


def render_per_frame(run: ProduceRun) -> float | None:
    rendered = [(r["render"]["seconds"], run.frames[a]) for a, r in run.records.items() if "render" in r]
    frames = sum(f for _, f in rendered)
    return sum(s for s, _ in rendered) / frames if frames else None


def first_stage_start(run: ProduceRun) -> float | None:
    starts = [r["finished_at"] - r["seconds"] for records in run.records.values() for r in records.values()
              if "finished_at" in r]
    return min(starts) - run.started_at if starts else None


def peak_line(run: ProduceRun) -> str:
    parts = ", ".join(f"{kind} {rss / GIB:.2f}" for kind, rss in sorted(run.peak_kinds.items(), key=lambda kv: -kv[1]))
    return f"  peak RSS       {run.peak_rss / GIB:8.2f} GiB (process tree; at the peak, GiB: {parts})"


def pass_line(ok: bool | None, text: str) -> str:
    return f"  {'PASS' if ok else 'FAIL' if ok is not None else 'n/a '}  {text}"


def report_batch(run: ProduceRun, workers: int, floor: dict | None, title: str,
                 box_floor: dict | None = None) -> list[str]:
    """The batch figures and their targets, as printed lines."""
    summary = run.summary
    lines = [f"=== {title} ==="]
    if run.code != 0 and not summary:
        return lines + [f"  produce exited with {run.code}; no summary"]
    video = summary["video_seconds"]
    flow_wall = summary["wall_seconds"]
    whole = video / run.command_wall if run.command_wall else 0.0
    lines.append(f"  rows finished {len(summary['finished'])}, quarantined {len(summary['failed'])} "
                 f"(exit {run.code}); {video:.1f} s of video, {sum(run.frames.values())} frames")
    for failure in summary["failed"][:5]:
        lines.append(f"    quarantined {failure['id']} ({failure['stage']}): {failure['error'][:120]}")
    lines.append(f"  whole command  {run.command_wall:8.1f} s wall -> {whole:.2f}x real time")
    lines.append(f"  flow only      {flow_wall:8.1f} s wall -> {video / flow_wall:.2f}x real time")
    last_mp4, source = time_to_last_mp4(run)
    to_mp4 = video / last_mp4 if last_mp4 else 0.0  # the real time (the target below)
    if last_mp4 is not None:
        lines.append(f"  to last MP4    {last_mp4:8.1f} s from command start ({source}) -> {to_mp4:.2f}x real time")
    lines.append(f"  to command end {run.command_wall:8.1f} s")
    start_up = first_stage_start(run)
    if start_up is not None:
        lines.append(f"  start-up       {start_up:8.1f} s (command start to the first stage running)")
    lines.append("  stage seconds (sum over rows):")
    for stage, seconds in summary["stage_seconds"].items():
        lines.append(f"    {stage:<12} {seconds:8.1f} s")
    total_task = sum(float(r["seconds"]) for records in run.records.values() for r in records.values())
    chain = max((longest_chain(records) for records in run.records.values()), default=0.0)
    # Planning runs in the flow before any row's first task: it heads every chain.
    plan = float(summary.get("plan_seconds", 0.0))
    bound = plan + max(chain, total_task / workers)
    overhead = (flow_wall - bound) / flow_wall if flow_wall else None
    lines.append(f"  orchestration  flow wall {flow_wall:.1f} s - (plan {plan:.1f} s + max(longest chain {chain:.1f} s, "
                 f"task time {total_task:.1f} s / {workers} workers = {total_task / workers:.1f} s)) "
                 f"= {flow_wall - bound:.1f} s -> {overhead:.1%} of the wall")
    lines.append(peak_line(run))
    per_frame = render_per_frame(run)
    ratio = None
    if per_frame is not None:
        lines.append(f"  render stage   {per_frame * 1000:8.1f} ms/frame")
    if floor is not None:
        lines.append(f"  Blender floor  {floor['per_frame'] * 1000:8.1f} ms/frame ({floor['processes']} processes at "
                     f"once, {floor['frames']} frames each, photo, {RESOLUTION}², whole frames, AA off, "
                     f"H.264 by Blender)")
        if per_frame is not None:
            ratio = per_frame / floor["per_frame"]
            lines.append(f"  render / floor {ratio:8.2f}x")
    if box_floor is not None and box_floor["face_crop"]:
        left, top, width, height = box_floor["face_crop"]
        lines.append(f"  face-box floor {box_floor['per_frame'] * 1000:8.1f} ms/frame (the same jobs rendering only "
                     f"the face's {width}x{height} box at ({left}, {top}), as the render stage does)")
        if per_frame is not None:
            lines.append(f"  render / face-box floor {per_frame / box_floor['per_frame']:.2f}x")
    lines.append("  targets:")
    # The real time: seconds of video per second from command start to the last MP4 (the deliverable
    # waited for); the GLB and .blend exports that land after it count in the command's end, printed above.
    lines.append(pass_line(to_mp4 >= TARGET_REALTIME,
                           f"command start to last MP4 {to_mp4:.2f}x >= {TARGET_REALTIME}x real time"))
    lines.append(pass_line(None if ratio is None else ratio <= TARGET_FLOOR_RATIO,
                           f"render {'n/a' if ratio is None else f'{ratio:.2f}x'} <= {TARGET_FLOOR_RATIO}x the floor"))
    lines.append(pass_line(None if overhead is None else overhead <= TARGET_OVERHEAD,
                           f"orchestration overhead {overhead:.1%} <= {TARGET_OVERHEAD:.0%}"))
    return lines


# ----------------------------------------------------------------------------------------------
# The bare-Blender floor
# ----------------------------------------------------------------------------------------------

def measure_floor(run: ProduceRun, processes: int, folder: Path, face_crop: bool = False) -> dict | None:
    """Render the run's longest rig `processes` times at once with bare Blender jobs: photo mode,
    the run's resolution, no poster, GLB or .blend. Floor = mean render seconds / frames. The floor
    renders whole frames; with `face_crop`, the same jobs render only the face's box, as the render
    stage does, which shows the stage's cost beyond its pixels."""
    from stores.avatar_store import AvatarStore
    from tasks.common.arkit import ARKIT_NAMES
    from tasks.render.config import RenderConfig
    from tasks.render.runner import run_blender_job, write_job
    from tasks.render.task import RIG_ARRAYS, outputs_for

    if not run.frames:
        return None
    avatar = max(run.frames, key=run.frames.get)
    store = AvatarStore(str(run.data_dir / "avatars.zarr"))
    names = dict(RIG_ARRAYS)
    group = store.avatar_group(run.summary["run"], avatar)
    if "texture/styled" in group and "style" in run.records.get(avatar, {}):
        names["texture"] = "texture/styled"
    arrays = {key: store.read(run.summary["run"], avatar, name) for key, name in names.items()}
    settings = RenderConfig(mode="photo", write_blend=False, write_glb=False)
    jobs = []
    for index in range(processes):
        job_path = write_job(folder / f"floor_{index}", **arrays, settings=settings, fps=FPS, resolution=RESOLUTION,
                             seed=0, shape_key_names=ARKIT_NAMES, outputs=outputs_for(settings, ("video",)))
        job_path.write_text(json.dumps({**json.loads(job_path.read_text()), "face_crop": face_crop}))
        jobs.append(job_path)
    with ThreadPoolExecutor(processes) as pool:
        # one-shot processes, so the jobs really run at once (a worker's long-lived Blender takes one at a time)
        results = list(pool.map(lambda path: run_blender_job(path, timeout_s=1800, jobs_per_blender=1), jobs))
    frames = int(results[0]["frames"])
    per_frame = sum(r["seconds"]["render"] for r in results) / len(results) / frames
    return {"per_frame": per_frame, "processes": processes, "frames": frames, "avatar": avatar,
            "face_crop": results[0].get("face_crop")}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def batch_benchmark(args, folder: Path, profile: str | None, workers: int, title: str) -> list[str]:
    manifest, roots = write_benchmark_manifest(folder / "inputs")
    print(f"[{title}] produce on {manifest} (log {folder / 'produce.log'}) ...", flush=True)
    run = run_produce(manifest, folder / "data", roots, args.preset, profile, args.workers, folder / "produce.log")
    floor = box_floor = None
    if run.frames and not args.no_floor:
        print(f"[{title}] bare-Blender floor with {workers} processes ...", flush=True)
        floor = measure_floor(run, workers, folder / "floor")
        box_floor = measure_floor(run, workers, folder / "face_box_floor", face_crop=True)
    return report_batch(run, workers, floor, title, box_floor)


def long_row_benchmark(args, folder: Path, profile: str | None, title: str) -> list[str]:
    manifest, roots, audio_seconds = write_long_row_manifest(folder / "inputs", args.long_minutes,
                                                             not args.long_untranscribed)
    kind = "without a transcript" if args.long_untranscribed else "with its transcript"
    print(f"[{title}] produce one {audio_seconds / 60:.1f}-minute speech row {kind} ...", flush=True)
    run = run_produce(manifest, folder / "data", roots, args.preset, profile, args.workers, folder / "produce.log")
    lines = [f"=== {title}: one {audio_seconds:.0f} s speech row {kind} ==="]
    if not run.summary or not run.summary["finished"]:
        failed = run.summary.get("failed", []) if run.summary else []
        return lines + [f"  produce exited with {run.code}; "
                        f"{failed[0]['stage'] + ': ' + failed[0]['error'] if failed else 'no summary'}",
                        pass_line(False, "the long row rendered")]
    video = run.summary["video_seconds"]
    lines.append(f"  whole command  {run.command_wall:8.1f} s wall -> {video / run.command_wall:.2f}x real time")
    lines.append(f"  flow only      {run.summary['wall_seconds']:8.1f} s wall")
    for stage, seconds in run.summary["stage_seconds"].items():
        lines.append(f"    {stage:<12} {seconds:8.1f} s ({seconds / max(audio_seconds, 1e-9) * 60:.1f} s per minute of audio)")
    lines.append(peak_line(run))
    server = run.peak_kinds.get("Prefect server", 0)
    if server:
        lines.append(f"  peak RSS without the Prefect server the command started: {(run.peak_rss - server) / GIB:.2f} GiB")
    lines.append(pass_line(run.peak_rss < TARGET_LONG_ROW_BYTES,
                           f"long row peak RSS {run.peak_rss / GIB:.2f} GiB < {TARGET_LONG_ROW_BYTES / GIB:.0f} GiB"))
    return lines


def main() -> int:
    from infra.profiles import get_profile, visible_gpu_devices

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="photo")
    parser.add_argument("--workers", type=int, help="LocalCluster workers (default: the profile's)")
    parser.add_argument("--no-long-row", action="store_true", help="skip the long speech row")
    parser.add_argument("--long-minutes", type=float, default=10.0, help="length of the long row (default 10)")
    parser.add_argument("--long-untranscribed", action="store_true",
                        help="give the long row no transcript (its words are recognised first)")
    parser.add_argument("--no-batch", action="store_true", help="skip the 20-row batch (run the long row only)")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-Blender floor")
    parser.add_argument("--folder", type=Path, help="working folder (default: a new temporary one, removed after)")
    args = parser.parse_args()

    folder = args.folder or Path(tempfile.mkdtemp(prefix="avatarflow-bench-"))
    profiles: list[str | None] = ["local"]
    if visible_gpu_devices():
        profiles.append("gpu")
    report: list[str] = []
    try:
        for profile in profiles:
            chosen = get_profile(profile, workers=args.workers)
            workers = chosen.n_workers + len(chosen.gpu_devices)
            if not args.no_batch:
                lines = batch_benchmark(args, folder / f"batch-{profile}", profile, workers,
                                        f"20-row batch, {profile} profile, {workers} workers")
                print("\n".join(lines), flush=True)
                report += lines
            if not args.no_long_row:
                lines = long_row_benchmark(args, folder / f"long-{profile}", profile, f"long row, {profile} profile")
                print("\n".join(lines), flush=True)
                report += lines
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"(inputs, logs and outputs kept in {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
