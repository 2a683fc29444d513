"""Run-level tasks: plan_run (manifest → plan, avatar groups created before fan-out) and
publish_run (quarantine report, dashboard, summary, MLflow run, Prefect table artifacts)."""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from avatarflow.presets import PipelineConfig, config_json, config_to_dict
from stores.avatar_store import AvatarStore
from stores.expectations import validate_manifest
from stores.manifest import read_manifest
from stores.location import DataLocation
from stores.outputs import RunOutputs, write_quarantine, write_report, write_summary
from stores.run_lock import acquire_run_lock, release_run_lock
from stores.tracking import RunTracker
from stores.model_registry import production_versions
from tasks.batch.monitoring import publish_run_tables
from tasks.batch.plan import RunPlan, models_needed, row_fingerprint, run_name, split_rows


@task(name="plan-run", cache_policy=NO_CACHE, persist_result=False)
def plan_run(manifest: str, data_dir: str, preset: str, config: PipelineConfig) -> RunPlan:
    started_at = time.time()
    table = read_manifest(manifest)
    errors = validate_manifest(table.to_frame(), config.manifest)
    for index, message in table.row_errors.items():
        errors[index] = message if index not in errors else f"{message}; {errors[index]}"
    rows, quarantined = split_rows(table.rows, table.line_numbers, errors, config.ingest.default_language)

    location = DataLocation(data_dir)
    store_url = location.join("avatars.zarr").url
    manifest_dir = DataLocation(table.folder).url  # an absolute path, or the folder URL of a URL manifest
    plan = RunPlan(
        run=run_name(table.path, preset),
        store_url=store_url,
        data_dir=location.url,
        manifest_dir=manifest_dir,
        manifest_sha256=table.sha256,
        started_at=started_at,
        quarantined=quarantined,
    )
    plan.lock = acquire_run_lock(location, plan.run)  # held until publish_run
    try:
        store = AvatarStore(store_url)
        settings = config_json(config)
        versions = production_versions(data_dir, {name for row in rows for name in models_needed(row)})
        for row in rows:
            fingerprint = row_fingerprint(row, manifest_dir, settings, versions)
            if store.is_complete(plan.run, row.id, fingerprint):
                plan.reused.append(row)
            else:
                store.prepare_avatar(plan.run, row.id, row.to_dict(), fingerprint)
                plan.pending.append(row)
    except BaseException:
        release_run_lock(plan.lock)
        raise
    return plan


@task(name="publish-run", cache_policy=NO_CACHE, persist_result=False)
def publish_run(plan: RunPlan, outcomes: list[dict], preset: str, config: PipelineConfig) -> dict:
    """Write the run's reports and its MLflow run, then release the run lock, also when writing
    fails (a rerun can then start at once)."""
    try:
        return _publish(plan, outcomes, preset, config)
    finally:
        if plan.lock is not None:
            release_run_lock(plan.lock)


def _publish(plan: RunPlan, outcomes: list[dict], preset: str, config: PipelineConfig) -> dict:
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
    wall = time.time() - plan.started_at
    built = [o for o in finished if not o.get("reused")]
    video_seconds = sum(o["video_seconds"] for o in built)
    stage_seconds: dict[str, float] = {}
    for outcome in built:
        for stage, seconds in outcome["seconds"].items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds

    quarantine_path = write_quarantine(outputs, failures)
    summary = {
        "run": plan.run, "preset": preset, "output_folder": str(outputs.folder),
        "report": str(outputs.report_html), "quarantine": str(quarantine_path),
        "finished": [o["id"] for o in finished], "reused": [r.id for r in plan.reused],
        "failed": [{"id": f["id"], "line": f["line"], "stage": f["stage"], "error": f["error"]} for f in failures],
        "warnings": {o["id"]: o["warnings"] for o in finished if o.get("warnings")},
        "wall_seconds": wall, "video_seconds": video_seconds,
        "realtime_factor": video_seconds / wall if built else None,
        "stage_seconds": stage_seconds,
    }
    report_path = write_report(outputs, sorted(finished, key=lambda o: o["line"]), failures, summary)
    write_summary(outputs, summary)

    with RunTracker(plan.data_dir, "avatarflow-produce", plan.run, tags={"preset": preset}) as tracker:
        tracker.log_params({"preset": preset, "manifest_sha256": plan.manifest_sha256, "run": plan.run,
                            "rows": len(plan.pending) + len(plan.reused) + len(plan.quarantined)})
        tracker.log_dict(config_to_dict(config), "config.json")
        metrics = {"avatars_finished": len(finished), "avatars_failed": len(failures), "avatars_reused": len(plan.reused),
                   "wall_seconds": wall, "video_seconds": video_seconds,
                   "frames": sum(o.get("frames", 0) for o in built)}
        if built:
            metrics["realtime_factor"] = video_seconds / wall
        metrics.update({f"stage_seconds_{stage}": seconds for stage, seconds in stage_seconds.items()})
        tracker.log_metrics(metrics)
        for outcome in finished:
            poster = outcome["outputs"].get("poster")
            if poster and DataLocation(poster).exists():
                tracker.log_artifact(poster, artifact_path=f"posters/{outcome['id']}")
        tracker.log_artifact(report_path)
        tracker.log_artifact(quarantine_path)
        summary["mlflow_run_id"] = tracker.run_id

    publish_run_tables(plan.run, sorted(finished, key=lambda o: o["line"]), failures, summary)
    return summary
