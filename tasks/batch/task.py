"""Run-level tasks: plan_run (manifest → plan, avatar groups created before fan-out, rows whose
input files fail ingest's first checks quarantined at once) and publish_run (quarantine report,
dashboard, summary, MLflow run, Prefect table artifacts); write_interrupted_run for a run stopped
half-way."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from prefect import task
from prefect.cache_policies import NO_CACHE

from avatarflow.presets import PipelineConfig, config_json, config_to_dict
from stores.avatar_store import AvatarStore
from stores.expectations import validate_manifest_apart
from stores.manifest import read_manifest
from stores.location import DataLocation
from stores.outputs import RunOutputs, write_quarantine, write_report, write_summary
from stores.tracking import RunTracker
from stores.model_registry import production_versions
from tasks.batch.config import BatchConfig
from tasks.batch.monitoring import publish_run_tables
from tasks.batch.plan import RunPlan, models_needed, row_fingerprint, run_name, split_rows
from tasks.common.errors import AvatarInputError
from tasks.common.rows import AvatarRow
from tasks.ingest.config import IngestConfig
from tasks.ingest.media import precheck_input


INTERRUPTED = "the run was stopped before this row finished; a re-run builds it"

PLANNING_THREADS = 4
"""Rows planned at once: planning is store and file-system IO, which threads overlap."""


@task(name="plan-run", cache_policy=NO_CACHE, persist_result=False)
def plan_run(manifest: str, data_dir: str, preset: str, config: PipelineConfig, run: str | None = None) -> RunPlan:
    """Read and check the manifest, then plan each valid row: reuse it when it is complete, quarantine
    it when its input files fail ingest's first checks (no task runs for it), else prepare its store
    group. `run` is the run name the caller holds the lock of (default: the manifest's)."""
    started_at = time.time()
    table = read_manifest(manifest)
    errors = validate_manifest_apart(table.to_frame(), config.manifest)
    for index, message in table.row_errors.items():
        errors[index] = message if index not in errors else f"{message}; {errors[index]}"
    rows, quarantined = split_rows(table.rows, table.line_numbers, errors, config.ingest.default_language)

    location = DataLocation(data_dir)
    store_url = location.join("avatars.zarr").url
    manifest_dir = DataLocation(table.folder).url  # an absolute path, or the folder URL of a URL manifest
    plan = RunPlan(
        run=run or run_name(table.path, preset),
        store_url=store_url,
        data_dir=location.url,
        manifest_dir=manifest_dir,
        manifest_sha256=table.sha256,
        started_at=started_at,
        quarantined=quarantined,
    )
    store = AvatarStore(store_url)
    settings = config_json(config)
    versions = production_versions(data_dir, {name for row in rows for name in models_needed(row)})

    def plan_row(row: AvatarRow) -> tuple[str, str | None]:
        """("reused" | "pending" | "failed", ingest's error for a failed row)."""
        fingerprint = row_fingerprint(row, manifest_dir, settings, versions)
        if store.is_complete(plan.run, row.id, fingerprint):
            return "reused", None
        error = input_error(row, manifest_dir, config.ingest)
        if error is None:
            store.prepare_avatar(plan.run, row.id, row.to_dict(), fingerprint)
            return "pending", None
        store.fail_before_stages(plan.run, row.id, row.to_dict(), fingerprint, "ingest", error)
        return "failed", error

    # The first row alone creates the run's group; the others only add groups below it.
    first = [plan_row(row) for row in rows[:1]]
    with ThreadPoolExecutor(PLANNING_THREADS) as pool:
        for row, (kind, error) in zip(rows, first + list(pool.map(plan_row, rows[1:]))):
            if kind == "reused":
                plan.reused.append(row)
            elif kind == "pending":
                plan.pending.append(row)
            else:
                plan.quarantined.append({"line": row.line, "id": row.id, "stage": "ingest", "error": error})
    plan.quarantined.sort(key=lambda failure: failure["line"])
    RunOutputs(location, plan.run).remove_avatars(row.id for row in plan.pending)  # no earlier build's video while it rebuilds
    plan.plan_seconds = time.time() - started_at
    return plan


def input_error(row: AvatarRow, manifest_dir: str, config: IngestConfig) -> str | None:
    """The one-line error ingest would stop the row with on its portrait or audio file, from the
    checks made before decoding (found, inside the input roots, not empty, not too large, an image
    header); None when they pass. Ingest checks the portrait first, so it is checked first here."""
    try:
        for value, image in ((row.portrait, True), (row.audio, False)):
            if value is not None:
                precheck_input(value, manifest_dir, config, image)
    except AvatarInputError as error:
        return str(error)
    return None


@task(name="publish-run", cache_policy=NO_CACHE, persist_result=False)
def publish_run(plan: RunPlan, outcomes: list[dict], preset: str, config: PipelineConfig,
                batch: BatchConfig = BatchConfig()) -> dict:
    """Write the run's reports, its MLflow run and its Prefect tables."""
    summary, finished, failures, report_path, quarantine_path = _write_reports(plan, outcomes, [], preset)
    with RunTracker(plan.data_dir, "avatarflow-produce", plan.run, tags={"preset": preset}) as tracker:
        tracker.log_params({"preset": preset, "manifest_sha256": plan.manifest_sha256, "run": plan.run,
                            "rows": len(plan.pending) + len(plan.reused) + len(plan.quarantined)})
        tracker.log_dict(config_to_dict(config), "config.json")
        built = [o for o in finished if not o.get("reused")]
        metrics = {"avatars_finished": len(finished), "avatars_failed": len(failures), "avatars_reused": len(plan.reused),
                   "wall_seconds": summary["wall_seconds"], "video_seconds": summary["video_seconds"],
                   "frames": sum(o.get("frames", 0) for o in built)}
        if built:
            metrics["realtime_factor"] = summary["realtime_factor"]
        if summary["video_wall_seconds"] is not None:
            metrics["video_wall_seconds"] = summary["video_wall_seconds"]
        metrics.update({f"stage_seconds_{stage}": seconds for stage, seconds in summary["stage_seconds"].items()})
        tracker.log_metrics(metrics)
        for outcome in finished:
            poster = outcome["outputs"].get("poster")
            if poster and DataLocation(poster).exists():
                tracker.log_artifact(poster, artifact_path=f"posters/{outcome['id']}")
        tracker.log_artifact(report_path)
        tracker.log_artifact(quarantine_path)
        summary["mlflow_run_id"] = tracker.run_id

    publish_run_tables(plan.run, sorted(finished, key=lambda o: o["line"]), failures, summary, batch.max_table_rows)
    return summary


def write_interrupted_run(plan: RunPlan, outcomes: list[dict], unfinished: list[dict], preset: str) -> dict:
    """The reports of a run stopped half-way (Ctrl-C, SIGTERM): the rows that settled as usual, and
    the unfinished ones listed as interrupted, with the stages that were running. A plain function,
    not a task: it runs while the flow is being stopped. No MLflow run, no Prefect tables."""
    return _write_reports(plan, outcomes, unfinished, preset)[0]


def _write_reports(plan: RunPlan, outcomes: list[dict], interrupted: list[dict], preset: str) -> tuple:
    """Record failed rows in the store, then write quarantine.csv, report.html and summary.json.
    Returns (summary, finished, failures, report path, quarantine path)."""
    store = AvatarStore(plan.store_url)
    outputs = RunOutputs(plan.data_dir, plan.run)
    finished = [o for o in outcomes if o["status"] == "complete"]
    failures = plan.quarantined + [o for o in outcomes if o["status"] != "complete"]
    for row in plan.reused:
        attrs = store.attrs(plan.run, row.id)
        finished.append({
            "id": row.id, "line": row.line, "status": "complete", "reused": True,
            "seconds": {stage: info["seconds"] for stage, info in attrs.get("stages", {}).items()},
            "video_seconds": attrs.get("render", {}).get("frames", 0) / row.fps,
            "frames": attrs.get("render", {}).get("frames", 0),
            "outputs": attrs.get("outputs", {}),
            "warnings": [w for info in attrs.get("stages", {}).values() for w in info.get("warnings", [])],
        })
    failures.sort(key=lambda f: f.get("line", 0))
    for failure in outcomes:
        if failure["status"] != "complete":
            store.mark_failed(plan.run, failure["id"], failure["stage"], failure["error"])
    kept = {o["id"] for o in finished}  # a row that failed this time shows no video of an earlier build
    outputs.remove_avatars(f["id"] for f in failures if f.get("id") and f["id"] not in kept)
    wall = time.time() - plan.started_at
    built = [o for o in finished if not o.get("reused")]
    video_seconds = sum(o["video_seconds"] for o in built)
    # The MP4s are what is waited for; the GLB and .blend exports may land after the last of them.
    published = [o["video_published_at"] for o in built if o.get("video_published_at") is not None]
    video_wall = max(published) - plan.started_at if published else None
    stage_seconds: dict[str, float] = {}
    for outcome in built:
        for stage, seconds in outcome["seconds"].items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds

    # Interrupted rows are listed after the failures: they are not bad input, a re-run builds them.
    stopped = [{"line": r["line"], "id": r["id"], "stage": "interrupted", "error": f"{INTERRUPTED} ({r['state']})"}
               for r in interrupted]
    quarantine_path = write_quarantine(outputs, failures + stopped)
    summary = {
        "run": plan.run, "preset": preset, "output_folder": str(outputs.folder),
        "report": str(outputs.report_html), "quarantine": str(quarantine_path),
        "finished": [o["id"] for o in finished], "reused": [r.id for r in plan.reused],
        "failed": [{"id": f["id"], "line": f["line"], "stage": f["stage"], "error": f["error"]} for f in failures],
        "warnings": {o["id"]: o["warnings"] for o in finished if o.get("warnings")},
        "wall_seconds": wall, "plan_seconds": plan.plan_seconds, "video_seconds": video_seconds,
        "realtime_factor": video_seconds / wall if built else None,
        "video_wall_seconds": video_wall,
        "video_realtime_factor": video_seconds / video_wall if video_wall else None,
        "stage_seconds": stage_seconds,
    }
    if interrupted:
        summary["interrupted"] = [{"id": r["id"], "line": r["line"], "state": r["state"]} for r in interrupted]
    report_path = write_report(outputs, sorted(finished, key=lambda o: o["line"]), failures + stopped, summary)
    write_summary(outputs, summary)
    return summary, finished, failures, report_path, quarantine_path

