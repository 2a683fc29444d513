"""What a run shows in Prefect while it goes: a progress artifact updated as avatars settle,
table artifacts of the avatars (seconds per stage, status) and of the quarantined rows, and one
`avatarflow.avatar.failed` event per failed avatar (up to BatchConfig.max_failure_events), which
the automation in infra/automations.py counts to pause a deployment's schedule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from uuid import UUID

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.events import emit_event

from stores.report import stage_names
from tasks.batch.config import BatchConfig
from tasks.batch.plan import RunPlan

FAILURE_EVENT = "avatarflow.avatar.failed"
AVATAR_RESOURCE_PREFIX = "avatarflow.avatar"


def artifact_key(run: str, kind: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only. Keyed by run name, so
    re-runs of one manifest (a nightly schedule) line up as versions of the same artifact."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run.lower()).strip("-") or "run"
    return f"{slug}-{kind}"


def current_run_ids() -> tuple[str | None, str | None]:
    """(flow run id, deployment id) of the running flow; either is None outside a run or a deployment."""
    from prefect.runtime import deployment, flow_run

    return flow_run.id, deployment.id


def failure_event(run: str, failure: Mapping[str, Any], flow_run_id: str | None,
                  deployment_id: str | None) -> dict[str, Any]:
    """Keyword arguments of `emit_event` for one failed avatar (a quarantined manifest row counts)."""
    avatar = str(failure.get("id") or f"line-{failure.get('line', '?')}")
    related = []
    if flow_run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"})
    if deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{deployment_id}",
                        "prefect.resource.role": "deployment"})
    return {
        "event": FAILURE_EVENT,
        "resource": {"prefect.resource.id": f"{AVATAR_RESOURCE_PREFIX}.{run}.{avatar}",
                     "prefect.resource.name": avatar, "avatarflow.run": run},
        "related": related,
        "payload": {"run": run, "id": failure.get("id", ""), "line": failure.get("line"),
                    "stage": failure.get("stage", ""), "error": failure.get("error", "")},
    }


def emit_failure_events(run: str, failures: Iterable[Mapping[str, Any]], flow_run_id: str | None = None,
                        deployment_id: str | None = None) -> int:
    """Emit one failure event per failure, related to the given (default: the current) flow run and
    deployment. Returns how many were emitted."""
    if flow_run_id is None and deployment_id is None:
        flow_run_id, deployment_id = current_run_ids()
    emitted = 0
    for failure in failures:
        if emit_event(**failure_event(run, failure, flow_run_id, deployment_id)) is not None:
            emitted += 1
    return emitted


@dataclass
class RunProgress:
    """Share of a run's manifest rows that have settled (finished, reused or failed), published as
    a progress artifact. Reused and quarantined rows are settled from the start. The artifact is
    updated when the whole percentage changes, so a run of any size makes at most about a hundred
    updates; failure events stop after `max_failure_events`."""

    run: str
    total: int
    finished: int = 0
    failed: int = 0
    artifact_id: UUID | None = None
    flow_run_id: str | None = None
    deployment_id: str | None = None
    max_failure_events: int = BatchConfig().max_failure_events
    events_emitted: int = 0
    shown_percent: int = -1

    @classmethod
    def start(cls, plan: RunPlan, batch: BatchConfig | None = None) -> "RunProgress":
        """Create the progress artifact of a planned run and report its quarantined rows."""
        batch = batch or BatchConfig()
        flow_run_id, deployment_id = current_run_ids()
        progress = cls(run=plan.run, total=len(plan.pending) + len(plan.reused) + len(plan.quarantined),
                       finished=len(plan.reused), flow_run_id=flow_run_id, deployment_id=deployment_id,
                       max_failure_events=batch.max_failure_events)
        for failure in plan.quarantined:
            progress._fail(failure)
        progress.shown_percent = int(progress.percent)
        progress.artifact_id = create_progress_artifact(
            progress=progress.percent, key=artifact_key(plan.run, "progress"), description=progress.description)
        return progress

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else 100.0 * (self.finished + self.failed) / self.total

    @property
    def description(self) -> str:
        return (f"Run `{self.run}`: {self.finished + self.failed} of {self.total} rows settled "
                f"({self.finished} finished, {self.failed} failed)")

    def _fail(self, failure: Mapping[str, Any]) -> None:
        self.failed += 1
        if self.events_emitted < self.max_failure_events:
            self.events_emitted += 1
            emit_failure_events(self.run, [failure], self.flow_run_id, self.deployment_id)

    def record(self, outcome: dict) -> dict:
        """Count one avatar's outcome (from flows.outcomes.row_outcome), emit its failure event if
        it failed, update the artifact, and hand the outcome back."""
        if outcome["status"] == "complete":
            self.finished += 1
        else:
            self._fail(outcome)
        settled = self.finished + self.failed >= self.total
        if self.artifact_id is not None and (int(self.percent) != self.shown_percent or settled):
            self.shown_percent = int(self.percent)
            update_progress_artifact(self.artifact_id, self.percent, description=self.description)
        return outcome


def avatar_rows(avatars: list[Mapping[str, Any]], failures: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per manifest row: status, seconds per stage (one column each, in pipeline order),
    video seconds, and the failed stage and error. Every row has every column, as tables need."""
    stages = stage_names(avatars)
    rows = []
    for avatar in avatars:
        seconds = avatar.get("seconds", {}) or {}
        rows.append({"line": avatar.get("line"), "id": avatar.get("id"),
                     "status": "reused" if avatar.get("reused") else "finished",
                     **{f"{stage}_s": round(float(seconds[stage]), 2) if stage in seconds else None for stage in stages},
                     "total_s": round(sum(float(s) for s in seconds.values()), 2),
                     "video_s": round(float(avatar.get("video_seconds") or 0.0), 2), "failed_stage": "", "error": ""})
    for failure in failures:
        rows.append({"line": failure.get("line"), "id": failure.get("id", ""), "status": "failed",
                     **{f"{stage}_s": None for stage in stages}, "total_s": None, "video_s": None,
                     "failed_stage": failure.get("stage", ""), "error": failure.get("error", "")})
    return sorted(rows, key=lambda row: row["line"] if isinstance(row["line"], int) else 0)


def quarantine_rows(failures: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"line": f.get("line"), "id": f.get("id", ""), "stage": f.get("stage", ""), "error": f.get("error", "")}
            for f in failures]


def run_headline(run: str, finished: int, failed: int, summary: Mapping[str, Any]) -> str:
    """One line on a finished run: counts, speed, when the last MP4 landed, and where the outputs are."""
    realtime = summary.get("realtime_factor")
    speed = "—" if realtime is None else f"{realtime:.2f}× real time"
    if summary.get("video_wall_seconds") is not None:  # the exports may land after the last MP4
        speed += f", last MP4 at {summary['video_wall_seconds']:.1f} s of {summary.get('wall_seconds', 0.0):.1f} s"
    return (f"Run `{run}`: {finished} finished, {failed} quarantined; {speed}. "
            f"Outputs: `{summary.get('output_folder', '')}`")


def publish_run_tables(run: str, avatars: list[Mapping[str, Any]], failures: list[Mapping[str, Any]],
                       summary: Mapping[str, Any], max_rows: int = BatchConfig().max_table_rows) -> dict[str, UUID]:
    """The avatars table and the quarantine table of a finished run, as Prefect table artifacts, of
    at most `max_rows` rows each (in manifest order); the description says how many are left out."""
    headline = run_headline(run, len(avatars), len(failures), summary)
    table = avatar_rows(avatars[:max_rows], failures[:max_rows])[:max_rows]
    failed = quarantine_rows(failures[:max_rows])
    return {
        "avatars": create_table_artifact(table=table, key=artifact_key(run, "avatars"),
                                         description=headline + _left_out(len(table), len(avatars) + len(failures))),
        "quarantine": create_table_artifact(
            table=failed, key=artifact_key(run, "quarantine"),
            description=f"Run `{run}`: rows that failed, one line each" + _left_out(len(failed), len(failures))),
    }


def _left_out(shown: int, total: int) -> str:
    return "" if shown >= total else f" (the first {shown} of {total} rows; quarantine.csv has every failed row)"


def training_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per part of a training run: the dataset, then each model with its final metrics."""
    dataset = result.get("dataset", {}) or {}
    rows = [{"part": "dataset", "model": dataset.get("name", ""), "version": None, "steps": "",
             "images": dataset.get("n_images"), "seconds": round(float(dataset.get("seconds", 0.0)), 1),
             "promoted": None, "metrics": "reused" if dataset.get("reused") else "built"}]
    models = [(part, result.get(part)) for part in ("gan", "diffusion")]
    models += [("style", model) for model in (result.get("style") or {}).values()]
    for part, model in models:
        if not model:
            continue
        steps = model.get("steps")
        # The diffusion task trains two networks and reports steps per network.
        steps_text = ", ".join(f"{name} {count}" for name, count in steps.items()) if isinstance(steps, dict) else str(steps)
        metrics = ", ".join(f"{key.removeprefix('final_')}={value:.4g}" for key, value in model.items()
                            if key.startswith("final_") and isinstance(value, (int, float)))
        rows.append({"part": part, "model": model.get("model", ""), "version": model.get("version"),
                     "steps": steps_text, "images": model.get("train_images"),
                     "seconds": round(float(model.get("seconds", 0.0)), 1), "promoted": bool(model.get("promoted")),
                     "metrics": metrics})
    return rows


def publish_training_table(result: Mapping[str, Any]) -> UUID:
    """The training run's results (dataset size, model versions, steps, time, final metrics, whether
    production moved) as a Prefect table artifact."""
    return create_table_artifact(table=training_rows(result), key="avatarflow-training",
                                 description="Training run: dataset, model versions and final metrics")
